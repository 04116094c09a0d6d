/** The value of a successful op result, or a thrown error that shows the failure. */
import type { TermObject } from '../../src/codec/terms.js';

export function okValue(r: { ok: true; value: unknown } | { ok: false; reason: string; message: string }): TermObject {
  if (!r.ok) throw new Error(`op failed: {${r.reason}, ${r.message}}`);
  return r.value as TermObject;
}
