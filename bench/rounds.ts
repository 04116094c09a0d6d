/**
 * The benches' alternate rounds: `run` on this checkout and, with
 * BENCH_BASELINE=<another checkout, built>, on that one in turn, BENCH_ROUNDS
 * times, so that both meet the same machine in the same run (a change's cost
 * is their ratio).
 */
import { REPO_ROOT } from '../src/config.js';

export interface Rounds<R> {
  rounds: number;
  /** The baseline checkout, when given. */
  baseline: string | undefined;
  runs: R[];
  baseRuns: R[];
}

export async function alternateRounds<R>(run: (root: string) => Promise<R>, progress: (m: string) => void, label: string, defaultRounds: number): Promise<Rounds<R>> {
  const rounds = Number(process.env.BENCH_ROUNDS ?? defaultRounds);
  const baseline = process.env.BENCH_BASELINE;
  const out: Rounds<R> = { rounds, baseline, runs: [], baseRuns: [] };
  for (let i = 0; i < rounds; i++) {
    progress(`round ${i + 1}/${rounds} (${label})`);
    out.runs.push(await run(REPO_ROOT));
    if (baseline !== undefined) {
      progress(`round ${i + 1}/${rounds}, baseline ${baseline}`);
      out.baseRuns.push(await run(baseline));
    }
  }
  return out;
}
