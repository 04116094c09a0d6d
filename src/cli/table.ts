/**
 * Readable output for people: op replies (as JSON values) laid out as
 * aligned tables. `table` prints rows under chosen columns; `render` lays
 * out any reply: scalars as `key  value` lines, lists of maps as tables,
 * nested maps as indented sections. Long cells are cut to the terminal's
 * width; `--json` bypasses all of this.
 */
import type { Json } from '../codec/json.js';

export interface Column {
  readonly key: string;
  readonly label?: string;
  /** Cut cells to this many characters (the last column takes what the width leaves). */
  readonly max?: number;
  readonly format?: (v: Json | undefined, row: Record<string, Json>) => string;
}

type JsonObject = { [k: string]: Json };

const isObject = (v: Json | undefined): v is JsonObject => v !== null && typeof v === 'object' && !Array.isArray(v);

export function cellText(v: Json | undefined): string {
  if (v === undefined || v === null) return '';
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : v.toFixed(Math.abs(v) >= 100 ? 1 : 3);
  if (typeof v === 'string') return v.replace(/\s*\n\s*/g, ' ⏎ ');
  if (typeof v === 'boolean') return v ? 'yes' : 'no';
  if (Array.isArray(v) && v.every((x) => typeof x !== 'object' || x === null)) return v.map(cellText).join(', ');
  return JSON.stringify(v);
}

function cut(s: string, max: number): string {
  return s.length <= max ? s : `${s.slice(0, Math.max(1, max - 1))}…`;
}

/** Rows under columns, aligned; numbers right-aligned. `width` caps each line. */
export function table(rows: readonly JsonObject[], columns: readonly Column[], width = 120): string {
  if (rows.length === 0) return '(none)\n';
  const cells = rows.map((r) => columns.map((c) => cut(c.format ? c.format(r[c.key], r) : cellText(r[c.key]), c.max ?? 60)));
  const heads = columns.map((c) => c.label ?? c.key);
  const widths = columns.map((_, i) => Math.max(heads[i]!.length, ...cells.map((row) => row[i]!.length)));
  // The last column gets what the terminal leaves, if that is less.
  const before = widths.slice(0, -1).reduce((a, b) => a + b + 2, 0);
  const last = widths.length - 1;
  if (before + widths[last]! > width) widths[last] = Math.max(heads[last]!.length, width - before);
  const numeric = columns.map((c) => rows.every((r) => r[c.key] === undefined || r[c.key] === null || typeof r[c.key] === 'number'));
  const line = (vals: string[]): string =>
    vals
      .map((v, i) => {
        const s = cut(v, widths[i]!);
        return numeric[i] ? s.padStart(widths[i]!) : i === last ? s : s.padEnd(widths[i]!);
      })
      .join('  ')
      .trimEnd();
  return `${[line(heads), line(widths.map((w) => '─'.repeat(w))), ...cells.map(line)].join('\n')}\n`;
}

/** Columns for a list of maps: every key whose values are scalars or short lists, in first-seen order. */
export function autoColumns(rows: readonly JsonObject[]): Column[] {
  const keys: string[] = [];
  for (const r of rows) for (const k of Object.keys(r)) if (!keys.includes(k)) keys.push(k);
  return keys.map((key) => ({ key }));
}

/** Any reply, laid out for a person. */
export function render(v: Json, width = 120, indent = ''): string {
  if (Array.isArray(v)) {
    if (v.length > 0 && v.every(isObject)) return indentLines(table(v, autoColumns(v), width - indent.length), indent);
    return `${indent}${cellText(v) || '(none)'}\n`;
  }
  if (!isObject(v)) return `${indent}${cellText(v)}\n`;
  const keys = Object.keys(v);
  const scalar = keys.filter((k) => !isBlock(v[k]!));
  const w = Math.max(0, ...scalar.map((k) => k.length));
  let out = scalar.map((k) => `${indent}${k.padEnd(w)}  ${cut(cellText(v[k]), Math.max(20, width - indent.length - w - 2))}`).join('\n');
  if (out !== '') out += '\n';
  for (const k of keys.filter((k) => isBlock(v[k]!))) {
    const x = v[k]!;
    out += `\n${indent}${k}:\n`;
    out += typeof x === 'string' ? indentLines(`${x}\n`, `${indent}  `) : render(x, width, `${indent}  `);
  }
  return out;
}

/** Values shown as their own section: maps, lists of maps, multi-line or long text. */
function isBlock(x: Json): boolean {
  if (isObject(x)) return Object.keys(x).length > 0;
  if (Array.isArray(x)) return x.some((e) => typeof e === 'object' && e !== null);
  return typeof x === 'string' && (x.includes('\n') || x.length > 100);
}

function indentLines(s: string, indent: string): string {
  return indent === '' ? s : s.replace(/^(?=.)/gm, indent);
}
