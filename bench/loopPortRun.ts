/**
 * One run of bench/erlang/loop_bench.erl against a checkout's Port sidecar, for
 * the benches of the closed loop's hot path (loopPort.ts, loopSaturation.ts): a
 * database of its own on DATABASE_URL's server (PGlite without one), the
 * driver's figures decoded. BENCH_DECIDER=peer (PostgreSQL): a second sidecar
 * of the same checkout starts first on that database and takes the closed
 * loop's lease, so the sidecar measured only serves.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { decode } from '../src/codec/etf.js';
import { REPO_ROOT } from '../src/config.js';
import { ErlFloat, Tuple, record, type Term, type TermObject } from '../src/codec/terms.js';
import { createDatabase } from '../test/helpers/pg.js';
import { PortClient } from '../test/helpers/portClient.js';
import { holdsWithin } from '../test/helpers/poll.js';

/** One run: [echoP50, echoP99, chooseP50, chooseP99, pairs/s, echoPairs/s], CPU µs per pair, and a pair's time (µs). */
export interface Run {
  figures: number[];
  cpu: { busy: number; idle: number; sidecar: number; beam: number; postgres: number; peer: number; cores: number; sidecarEcho: number };
  pair: { p50: number; p99: number };
}

const num = (x: Term): number => (x instanceof ErlFloat ? x.value : Number(x));
export const peerDecides = process.env.BENCH_DECIDER === 'peer';
if (peerDecides && !process.env.DATABASE_URL) throw new Error('BENCH_DECIDER=peer needs DATABASE_URL (sidecars share a lease through PostgreSQL)');

/** The driver compiled into a temp dir of its own, and runs of it; `close` removes the dir. */
export class LoopPortRunner {
  private readonly tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pe-bench-loop-'));

  constructor(private readonly progress: (m: string) => void) {
    execFileSync('erlc', ['-o', this.tmp, path.join(REPO_ROOT, 'bench', 'erlang', 'loop_bench.erl')]);
  }

  /** One run of `root`'s sidecar, the driver's settings (BENCH_WINDOW, BENCH_PAIRS, ...) from `env` over the process's. */
  async run(root: string, env: NodeJS.ProcessEnv = {}): Promise<Run> {
    const dataDir = fs.mkdtempSync(path.join(this.tmp, 'data-'));
    const db = process.env.DATABASE_URL ? await createDatabase(process.env.DATABASE_URL, 'pe_bench_loop_port') : undefined;
    const peer = peerDecides && db !== undefined ? await this.decidingPeer(root, db.url) : undefined;
    try {
      const out = execFileSync('erl', ['-noshell', '-pa', this.tmp, '-eval', `loop_bench:main(${JSON.stringify([path.join(root, 'port', 'prompt_engine'), '--port-fds'])})`], {
        env: {
          ...process.env,
          ...env,
          ...(db === undefined ? {} : { DATABASE_URL: db.url }),
          ...(peer === undefined ? {} : { BENCH_PEER_PID: String(peer.pid) }),
          LOG_LEVEL: 'warn',
          PROMPT_ENGINE_DATA_DIR: dataDir,
          LLM_URL: '',
          PROMPT_ENGINE_RETRAIN_EVERY: '0',
        },
        stdio: ['ignore', 'pipe', 'inherit'],
      }).toString();
      const line = out.split('\n').find((l) => l.startsWith('result '));
      if (line === undefined) throw new Error(`no result: ${out}`);
      const items = (decode(Buffer.from(line.slice(7), 'hex')) as Tuple).items;
      const [busy, idle, sidecar, beam, postgres, peerCpu, cores] = (items[6] as Tuple).items.map(num) as [number, number, number, number, number, number, number];
      const [p50, p99] = (items[8] as Tuple).items.map(num) as [number, number];
      const r = { figures: items.slice(0, 6).map(num), cpu: { busy, idle, sidecar, beam, postgres, peer: peerCpu, cores, sidecarEcho: num(items[7]!) }, pair: { p50, p99 } };
      this.progress(`  ${Math.round(r.figures[4]!)} choose + track pairs/s`);
      return r;
    } finally {
      await peer?.close();
      await db?.drop();
    }
  }

  close(): void {
    fs.rmSync(this.tmp, { recursive: true, force: true });
  }

  /**
   * A sidecar of `root` on `databaseUrl` that holds the closed loop's lease (it decides; the measured one
   * serves); undefined for a checkout without the lease (before the fleet, every sidecar decided for itself).
   */
  private async decidingPeer(root: string, databaseUrl: string): Promise<PortClient | undefined> {
    const peer = new PortClient({
      command: path.join(root, 'port', 'prompt_engine'),
      env: { DATABASE_URL: databaseUrl, LOG_LEVEL: 'warn', NATS_URL: '', PROMPT_ENGINE_DATA_DIR: fs.mkdtempSync(path.join(this.tmp, 'peer-')), LLM_URL: '', PROMPT_ENGINE_RETRAIN_EVERY: '0' },
    });
    await peer.ready;
    // Listing the experiments starts the loop's service, which takes the lease when nobody holds it.
    let deciding: Term | undefined;
    await holdsWithin(async () => {
      await peer.request('experiment', record({}));
      const stats = await peer.request('stats', record({}));
      const loop = stats.ok ? ((stats.value as TermObject).services as TermObject | undefined)?.experiments : undefined;
      deciding = (loop as TermObject | undefined)?.deciding;
      return deciding !== false;
    }, 60_000);
    if (deciding === true) return peer;
    await peer.close();
    if (deciding === false) throw new Error(`the peer sidecar of ${root} did not take the closed loop's lease`);
    this.progress(`  ${root} has no shared decider: its sidecar decides for itself, no peer`);
    return undefined;
  }
}
