/**
 * Core ops: `echo` (codec cross-checks, latency benchmarks), `health`
 * (degraded when the database or NATS is unreachable), `stats`, and
 * `describe` (every op with its arguments, reply and errors, from the op
 * table itself).
 */
import os from 'node:os';
import { float, record, type Term, type TermObject } from '../codec/terms.js';
import { PROTOCOL_VERSION, VERSION } from '../version.js';
import { integer, string } from '../contract/schema.js';
import { probeDependencies } from '../services.js';
import { describeOps, opDescriptionTerm } from './describe.js';
import type { OpTable } from './registry.js';
import { typedOp, type OpSpec } from './types.js';
import { OpError } from '../contract/errors.js';

/**
 * `echo`: returns its args unchanged. Diagnostics for tests and benchmarks:
 * `delay_ms` (0..60000) waits first, abortably (a slow op); `spin_ms`
 * (0..10000) blocks the event loop (what a runaway handler looks like).
 */
export const echo = typedOp({
  name: 'echo',
  summary: 'returns its args unchanged (optional delay_ms, cancellable; spin_ms blocks the loop)',
  args: {
    delay_ms: integer({ min: 0, max: 60_000, default: 0, doc: 'wait this long first (abortable: a slow op for cancel and timeout tests)' }),
    spin_ms: integer({ min: 0, max: 10_000, default: 0, doc: 'block the event loop this long first (what a runaway handler looks like); through the Port only: over NATS any peer could stall every request' }),
  },
  openArgs: true,
  reply: 'the args map, unchanged (any other keys are accepted and returned)',
  examples: [{ hello: 'world', n: 1 }, { delay_ms: 10 }],
  refine: (a, raw) => ({ args: raw, delayMs: a.delay_ms, spinMs: a.spin_ms }),
  // ctx.signal is read only when needed: the transports create it lazily (an AbortController per request is costly).
  async handle({ args, delayMs, spinMs }, ctx) {
    if (spinMs > 0 && ctx.transport === 'nats') throw new OpError('bad_request', 'spin_ms: blocks every request of this sidecar, so it is taken only through the Port (its one owner), not from NATS peers');
    if (spinMs > 0) {
      const until = performance.now() + spinMs;
      while (performance.now() < until && !ctx.signal.aborted);
    }
    if (delayMs > 0) await abortableDelay(delayMs, ctx.signal);
    return args;
  },
});

export function abortableDelay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(new OpError('cancelled', 'request was cancelled'));
    const onAbort = (): void => {
      clearTimeout(t);
      reject(new OpError('cancelled', 'request was cancelled'));
    };
    const t = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** `health` and `stats` need the table they are in (op names, in-flight counts). */
export function coreOps(table: () => OpTable): OpSpec<unknown>[] {
  const health = typedOp({
    name: 'health',
    summary: 'status ("ok", or "degraded" with the reasons when the database or NATS is unreachable), versions, uptime, in-flight',
    args: {},
    reply:
      '%{status: "ok" | "degraded", reasons: [binary], checks: %{database: %{status: "ok" | "down" | "not_started", detail: binary}, nats: %{status: "ok" | "down" | "not_configured", detail: binary}}, version, protocol, node_version, os_pid, uptime_ms, in_flight, services: [binary]}',
    examples: [{}],
    async handle(_a, { engine }) {
      const checks = await probeDependencies(engine);
      const reasons = Object.entries(checks)
        .filter(([, c]) => c.status === 'down')
        .map(([name, c]) => `${name}: ${c.detail}`);
      return record({
        status: reasons.length === 0 ? 'ok' : 'degraded',
        reasons,
        checks: record({ database: record({ ...checks.database }), nats: record({ ...checks.nats }) }),
        version: VERSION,
        protocol: PROTOCOL_VERSION,
        node_version: process.version,
        os_pid: process.pid,
        uptime_ms: Date.now() - engine.startedAt,
        in_flight: table().inFlight - 1,
        services: engine.startedServices.slice(),
      });
    },
  });
  const stats = typedOp({
    name: 'stats',
    summary: 'per-op counters, memory, and the figures of every started service',
    args: {},
    reply: '%{uptime_ms, in_flight, ops: %{op => %{calls, errors, mean_ms}}, services: %{service => figures}, memory: %{rss, heap_used, external}, load: [float]}',
    examples: [{}],
    async handle(_a, { engine }) {
      const ops: Record<string, Term> = Object.create(null) as Record<string, Term>;
      for (const [name, c] of Object.entries(table().stats()))
        ops[name] = record({ calls: c.calls, errors: c.errors, mean_ms: float(c.calls ? c.totalMs / c.calls : 0) });
      const services: Record<string, Term> = Object.create(null) as Record<string, Term>;
      for (const [name, s] of Object.entries(await engine.serviceStats())) services[name] = s;
      const mem = process.memoryUsage();
      return record({
        uptime_ms: Date.now() - engine.startedAt,
        in_flight: table().inFlight - 1,
        ops: ops as TermObject,
        services: services as TermObject,
        memory: record({ rss: mem.rss, heap_used: mem.heapUsed, external: mem.external }),
        load: os.loadavg().map((x) => float(x)),
      });
    },
  });
  const describe = typedOp({
    name: 'describe',
    summary: 'every op with its arguments (type, default, required), reply shape and errors, from the op table (docs/ops.md is generated from the same data)',
    args: { op: string({ min: 1, max: 200, doc: 'describe only this op' }) },
    reply: '%{ops: [%{name, summary, args: [%{name, type, required, required_when, default, alias_of, doc, keys}], open_args, reply, errors: [%{reason, when}]}], common_errors: [%{reason, when}]}',
    errors: { not_found: 'no op of that name' },
    examples: [{}, { op: 'optimize_prompt' }],
    async handle({ op }) {
      const all = describeOps(table());
      const ops = op === undefined ? all.ops : all.ops.filter((d) => d.name === op);
      if (ops.length === 0) throw new OpError('not_found', `no op named ${JSON.stringify(op)}; known: ${all.ops.map((d) => d.name).join(', ')}`);
      return record({ ops: ops.map(opDescriptionTerm), common_errors: all.common_errors.map((e) => record({ ...e })) });
    },
  });
  return [echo, health, stats, describe];
}
