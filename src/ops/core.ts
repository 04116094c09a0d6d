/**
 * Core ops: `echo` (codec cross-checks, latency benchmarks), `health`
 * (degraded when the database or NATS is unreachable), `stats`, and
 * `describe` (every op with its arguments, reply and errors, from the op
 * table itself).
 */
import os from 'node:os';
import { float, record, type Term, type TermObject } from '../codec/terms.js';
import { PROTOCOL_VERSION, VERSION } from '../version.js';
import { optInt, optStr } from '../contract/args.js';
import { probeDependencies } from '../services.js';
import { describeOps, opDescriptionTerm } from './describe.js';
import type { OpTable } from './registry.js';
import { defineOp, type OpSpec } from './types.js';
import { OpError } from '../contract/errors.js';

/**
 * `echo`: returns its args unchanged. Diagnostics for tests and benchmarks:
 * `delay_ms` (0..60000) waits first, abortably (a slow op); `spin_ms`
 * (0..10000) blocks the event loop (what a runaway handler looks like).
 */
export const echo = defineOp<{ args: TermObject; delayMs: number; spinMs: number }>({
  name: 'echo',
  summary: 'returns its args unchanged (optional delay_ms, cancellable; spin_ms blocks the loop)',
  args: {
    delay_ms: { type: 'integer 0..60000', default: 0, doc: 'wait this long first (abortable: a slow op for cancel and timeout tests)' },
    spin_ms: { type: 'integer 0..10000', default: 0, doc: 'block the event loop this long first (what a runaway handler looks like)' },
  },
  openArgs: true,
  reply: 'the args map, unchanged (any other keys are accepted and returned)',
  examples: [{ hello: 'world', n: 1 }, { delay_ms: 10 }],
  validate: (args) => ({
    args,
    delayMs: optInt(args, 'delay_ms', { min: 0, max: 60_000 }) ?? 0,
    spinMs: optInt(args, 'spin_ms', { min: 0, max: 10_000 }) ?? 0,
  }),
  // ctx.signal is read only when needed: the transports create it lazily (an AbortController per request is costly).
  async handle({ args, delayMs, spinMs }, ctx) {
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
  const health = defineOp<Record<string, never>>({
    name: 'health',
    summary: 'status ("ok", or "degraded" with the reasons when the database or NATS is unreachable), versions, uptime, in-flight',
    args: {},
    reply:
      '%{status: "ok" | "degraded", reasons: [binary], checks: %{database: %{status: "ok" | "down" | "not_started", detail: binary}, nats: %{status: "ok" | "down" | "not_configured", detail: binary}}, version, protocol, node_version, os_pid, uptime_ms, in_flight, services: [binary]}',
    examples: [{}],
    validate: () => ({}),
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
  const stats = defineOp<Record<string, never>>({
    name: 'stats',
    summary: 'per-op counters, memory, and the figures of every started service',
    args: {},
    reply: '%{uptime_ms, in_flight, ops: %{op => %{calls, errors, mean_ms}}, services: %{service => figures}, memory: %{rss, heap_used, external}, load: [float]}',
    examples: [{}],
    validate: () => ({}),
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
  const describe = defineOp<{ op?: string }>({
    name: 'describe',
    summary: 'every op with its arguments (type, default, required), reply shape and errors, from the op table (docs/ops.md is generated from the same data)',
    args: { op: { type: 'string', doc: 'describe only this op' } },
    reply: '%{ops: [%{name, summary, args: [%{name, type, required, required_when, default, alias_of, doc, keys}], open_args, reply, errors: [%{reason, when}]}], common_errors: [%{reason, when}]}',
    errors: { not_found: 'no op of that name' },
    examples: [{}, { op: 'optimize_prompt' }],
    validate: (a) => ({ op: optStr(a, 'op', { min: 1, max: 200 }) }),
    async handle({ op }) {
      const all = describeOps(table());
      const ops = op === undefined ? all.ops : all.ops.filter((d) => d.name === op);
      if (ops.length === 0) throw new OpError('not_found', `no op named ${JSON.stringify(op)}; known: ${all.ops.map((d) => d.name).join(', ')}`);
      return record({ ops: ops.map(opDescriptionTerm), common_errors: all.common_errors.map((e) => record({ ...e })) });
    },
  });
  return [echo as OpSpec<unknown>, health as OpSpec<unknown>, stats as OpSpec<unknown>, describe as OpSpec<unknown>];
}
