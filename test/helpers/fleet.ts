/**
 * Several real sidecars sharing one PostgreSQL, driven through the closed
 * loop on data/multiprompt (test/fleet.test.ts): each peer is a sidecar
 * reached through its Port (stdio frames) or through NATS (a queue group);
 * choices and outcomes go to whichever peer the test routes them to, and
 * the success of each round is drawn from the served paraphrase's measured
 * accuracy, which no sidecar ever sees.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import type { NatsConnection } from 'nats';
import { isTermObject, newMap, type Term, type TermObject } from '../../src/codec/terms.js';
import { accuracyOf, groupsOf, loadTasks, type Group, type Task } from '../../src/learning/offline/loopSim/world.js';
import { NatsSidecar, requestJson } from './nats.js';
import { PortClient } from './portClient.js';

export interface Peer {
  readonly name: string;
  readonly pid: number;
  call(op: string, args: Record<string, unknown>): Promise<TermObject>;
  kill(): Promise<void>;
  close(): Promise<void>;
}

/** Plain JS (from a JSON reply or the test) as argument terms: maps with string keys, lists, strings, numbers, booleans. */
function toTerm(v: unknown): Term {
  if (Array.isArray(v)) return v.map(toTerm);
  if (isTermObject(v as Term)) return v as Term;
  if (v !== null && typeof v === 'object') {
    const m = newMap();
    for (const [k, x] of Object.entries(v)) m[k] = toTerm(x);
    return m;
  }
  return v as Term;
}

export function tmpDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** A sidecar behind its Port (stdio frames), with a data directory (journal) of its own that survives a restart. */
export async function portPeer(name: string, env: NodeJS.ProcessEnv, dataDir = tmpDir('pe-fleet-')): Promise<Peer & { dataDir: string }> {
  const c = new PortClient({ env: { LOG_LEVEL: 'warn', NATS_URL: '', PROMPT_ENGINE_DATA_DIR: dataDir, ...env } });
  await c.ready;
  return {
    name,
    dataDir,
    pid: c.pid,
    async call(op, args) {
      const r = await c.request(op, toTerm(args) as TermObject);
      if (!r.ok) throw new Error(`${name} ${op}: {${r.reason}, ${r.message}}`);
      return r.value as TermObject;
    },
    async kill() {
      c.kill('SIGKILL');
      await c.exited;
    },
    async close() {
      await c.close();
    },
  };
}

/**
 * A sidecar in NATS peer mode. `call` sends through NATS (queue group
 * `prompt_engine`: any instance may answer); `direct` asks this very
 * instance through its Port (what it holds, whether it decides).
 */
export async function natsPeer(name: string, natsUrl: string, env: NodeJS.ProcessEnv, nc: NatsConnection): Promise<Peer & { direct: Peer }> {
  // info: `ready` waits for the 'NATS peer mode serving' line.
  const sidecar = new NatsSidecar({ natsUrl, withPort: true, env: { LOG_LEVEL: 'info', ...env } });
  await sidecar.ready(60_000);
  const port = sidecar.port!;
  const kill = () => sidecar.kill('SIGKILL');
  const close = () => sidecar.kill('SIGTERM');
  return {
    name,
    pid: sidecar.pid,
    async call(op, args) {
      const { body } = await requestJson(nc, op, args, 30_000);
      const b = body as { ok?: unknown; error?: { reason: string; message: string } };
      if (b.ok === undefined) throw new Error(`${name} ${op}: ${JSON.stringify(b.error)}`);
      return toTerm(b.ok) as TermObject;
    },
    direct: {
      name: `${name} (port)`,
      pid: sidecar.pid,
      async call(op, args) {
        const r = await port.request(op, toTerm(args) as TermObject);
        if (!r.ok) throw new Error(`${name} ${op}: {${r.reason}, ${r.message}}`);
        return r.value as TermObject;
      },
      kill,
      close,
    },
    kill,
    close,
  };
}

export interface World {
  task: Task;
  group: Group;
}

export function world(taskName: string, model: string): World {
  const task = loadTasks().find((t) => t.name === taskName)!;
  return { task, group: groupsOf(task).find((g) => g.model === model)! };
}

export interface Drive {
  /** Outcome entry ids sent and acknowledged (each once, however often it was sent). */
  sent: Set<string>;
  /** The accuracy of each served text, by round. */
  served: number[];
}

/**
 * `rounds` rounds of choose → success ~ Bernoulli(measured accuracy) →
 * track_execution with the reply's metadata. `choose(i)` and `report(i)`
 * pick the peer of each call; `each(i)` runs before round i.
 */
export async function drive(
  w: World,
  experiment: string,
  rounds: number,
  rnd: () => number,
  route: { choose(i: number): Peer; report(i: number): Peer; each?(i: number, d: Drive): Promise<void> },
): Promise<Drive> {
  const d: Drive = { sent: new Set(), served: [] };
  for (let i = 0; i < rounds; i++) {
    await route.each?.(i, d);
    const c = await route.choose(i).call('choose_prompt', { experiment, prompt: w.task.base.text, context: { model: w.group.model } });
    const acc = accuracyOf(w.group, String(c.prompt));
    d.served.push(acc);
    const id = randomUUID();
    await route.report(i).call('track_execution', { id, prompt_id: c.prompt_id, success: rnd() < acc, execution_time_ms: 1, metadata: c.metadata });
    d.sent.add(id);
  }
  return d;
}

export interface ExperimentView {
  generation: number;
  outcomes: number;
  leader: string;
  pinned: string | null;
  variants: Array<{ prompt_id: string; state: string; count: number; successes: number }>;
}

/** What a peer's `experiment` op says, reduced to what every peer must agree on. */
export async function viewOf(p: Peer, experiment: string, model: string): Promise<ExperimentView> {
  const r = await p.call('experiment', { experiment, model });
  const e = (r.experiments as TermObject[])[0]!;
  const name = (t: Term | undefined): string => (typeof t === 'string' ? t : String((t as { name?: string }).name));
  return {
    generation: Number(e.generation),
    outcomes: Number(e.outcomes),
    leader: String((e.leader as TermObject).prompt_id),
    pinned: e.pinned === null || e.pinned === undefined ? null : String(e.pinned),
    variants: (e.variants as TermObject[])
      .map((v) => ({ prompt_id: String(v.prompt_id), state: name(v.state), count: Number(v.count), successes: Number(v.successes) }))
      .sort((a, b) => (a.prompt_id < b.prompt_id ? -1 : 1)),
  };
}

/** Poll every peer until they agree and `done` holds, or `ms` pass; returns the views (the caller asserts). */
export async function agreed(peers: readonly Peer[], experiment: string, model: string, done: (v: ExperimentView) => boolean, ms = 15_000): Promise<ExperimentView[]> {
  const until = Date.now() + ms;
  for (;;) {
    const views = await Promise.all(peers.map((p) => viewOf(p, experiment, model)));
    const same = views.every((v) => JSON.stringify(v) === JSON.stringify(views[0]));
    if ((same && done(views[0]!)) || Date.now() > until) return views;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The peer that decides the closed loop now (its `stats`), if any answers so. */
export async function deciderOf(peers: readonly Peer[]): Promise<Peer | undefined> {
  for (const p of peers) {
    const s = await p.call('stats', {});
    const exps = (s.services as TermObject | undefined)?.experiments as TermObject | undefined;
    if (exps?.deciding === true) return p;
  }
  return undefined;
}
