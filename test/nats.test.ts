/**
 * NATS peer mode against the real nats-server (TEST_NATS_URL, JetStream on)
 * and the real sidecar process (`serve --nats <url> --port`): every op over
 * NATS with JSON and ETF bodies gives what the Port gives; error shapes and
 * service-error headers; `$SRV.PING/INFO/STATS`; a payload encoded by real
 * Erlang; graceful drain on SIGTERM.
 */
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NatsConnection } from 'nats';
import { decode, encode } from '../src/codec/etf.js';
import { termToJson } from '../src/codec/json.js';
import { Atom, Tuple, atom, float, isTermObject, newMap, record, type Term, type TermObject } from '../src/codec/terms.js';
import { NatsSidecar, natsConnect, requestEtf, requestJson, requireEnv, sleep, ETF_CT, etfHeaders } from './helpers/nats.js';
import { holdsWithin } from './helpers/poll.js';

const NATS_URL = requireEnv('TEST_NATS_URL');

let sc: NatsSidecar;
let nc: NatsConnection;
let ops: string[];

beforeAll(async () => {
  sc = await new NatsSidecar({ natsUrl: NATS_URL, withPort: true }).ready();
  const info = await sc.port!.ready;
  ops = (info.ops as string[]).slice();
  nc = await natsConnect(NATS_URL);
});

afterAll(async () => {
  await nc?.close();
  await sc?.kill();
});

/** Args that make each op succeed (ops without an entry are called with an empty map). */
const SAMPLES: Record<string, () => TermObject> = {
  echo: () => record({ a: 1, s: 'x', f: float(2.5), l: [1, 2, 3], m: record({ k: 'v' }) }),
  cache_put: () => record({ key: 'nats-k1', value: record({ x: 1 }) }),
  cache_get: () => record({ key: 'nats-k1' }),
  optimize_prompt: () => record({ prompt: 'Write a function that sorts a list of users by age', breadth: 2, depth: 1 }),
  select_variant: () => record({ test_id: 'nats-t1', variants: ['a', 'b'] }),
  generate_prompt: () => record({ context: 'Write a GenServer that caches HTTP responses', language: 'elixir' }),
  // Fixed ids: the Port writes the entry, the NATS calls go through JetStream with the same id and answer the same.
  track_execution: () =>
    record({ id: '0b5e3c52-6f0e-4d55-9a57-3d4c0c7a0001', prompt_id: 'p-nats', execution_time_ms: 12, success: true, confidence_score: float(0.75), timestamp: '2026-11-24T10:00:00Z', metadata: newMapOf({ k: 'v' }) }),
  track_feedback: () =>
    record({ id: '0b5e3c52-6f0e-4d55-9a57-3d4c0c7a0002', prompt_id: 'p-nats', feedback_type: atom('quality'), rating: float(4.5), timestamp: '2026-11-24T10:00:00Z', context: newMapOf({}) }),
  track_evolution: () =>
    record({ id: '0b5e3c52-6f0e-4d55-9a57-3d4c0c7a0003', original_prompt_id: 'p-nats', evolved_prompt_id: 'p-nats-2', evolution_type: 'refinement', performance_improvement: float(0.1), evolution_timestamp: '2026-11-24T10:00:00Z', evolution_metadata: newMapOf({}) }),
  track_ab_result: () =>
    record({ id: '0b5e3c52-6f0e-4d55-9a57-3d4c0c7a0004', test_id: 't-nats', variant_a_prompt_id: 'a', variant_b_prompt_id: 'b', winner: 'a', confidence_level: float(0.9), sample_size: 100, test_duration: 1000, test_timestamp: '2026-11-24T10:00:00Z', metrics: newMapOf({ ctr: float(0.5) }) }),
  track_context_signature: () =>
    record({ id: '0b5e3c52-6f0e-4d55-9a57-3d4c0c7a0005', signature_hash: 'h-nats', project_tech_stack: ['elixir'], project_type: 'web', complexity_level: 'low', created_at: '2026-11-24T10:00:00Z', metadata: newMapOf({}) }),
  query: () => record({ kind: 'by_id', id: '0b5e3c52-6f0e-4d55-9a57-3d4c0c7a0001' }),
};

/** A map with binary keys (user data), as Elixir sends metadata. */
function newMapOf(o: Record<string, Term>): TermObject {
  const m = newMap();
  for (const [k, v] of Object.entries(o)) m[k] = v;
  return m;
}
/** Results that legitimately differ call to call (clocks, counters, sampling, cache hits): compare their keys. */
const VOLATILE = new Set(['health', 'stats', 'cache_stats', 'optimize_prompt', 'select_variant', 'query', 'prompt_stats', 'generate_prompt']);

/** The rows stored under entry `id`, asked of the sidecar until there are some (the consumer stores them a moment later), at most 15 s. */
async function storedRows(id: string): Promise<TermObject[]> {
  let rows: TermObject[] = [];
  await holdsWithin(async () => {
    const r = await sc.port!.request('query', record({ kind: 'by_id', id }));
    rows = r.ok ? (((r.value as TermObject).rows as TermObject[]) ?? []) : [];
    return rows.length > 0;
  }, 15_000);
  return rows;
}

function keysOf(t: Term): string[] {
  return isTermObject(t) ? Object.keys(t).sort() : [];
}

describe('every op over NATS, JSON and ETF, matches the Port', () => {
  it('has the ops of the table on prompt_engine.<op>', () => {
    expect(ops).toContain('echo');
    expect(ops.length).toBeGreaterThanOrEqual(10);
  });

  it('each op: same result (or same error) through Port, NATS+ETF and NATS+JSON', async () => {
    const checked: string[] = [];
    for (const op of ops) {
      const args = SAMPLES[op]?.() ?? record({});
      const viaPort = await sc.port!.request(op, args);
      const { term, msg: etfMsg } = await requestEtf(nc, op, args, 30_000);
      const { body, msg: jsonMsg } = await requestJson(nc, op, termToJson(args), 30_000);
      const ctx = `op ${op}`;
      if (SAMPLES[op] !== undefined) expect(viaPort, ctx).toMatchObject({ ok: true }); // the samples are valid
      expect(term, ctx).toBeInstanceOf(Tuple);
      const [tag, value] = (term as Tuple).items;
      expect(etfMsg.headers?.get('Content-Type'), ctx).toBe(ETF_CT);
      expect(jsonMsg.headers?.get('Content-Type'), ctx).toBe('application/json');
      if (!viaPort.ok) {
        expect((tag as Atom).name, ctx).toBe('error');
        const [reason, message] = (value as Tuple).items;
        expect((reason as Atom).name, ctx).toBe(viaPort.reason);
        expect(message, ctx).toBe(viaPort.message);
        expect(body, ctx).toEqual({ error: { reason: viaPort.reason, message: viaPort.message } });
        for (const m of [etfMsg, jsonMsg]) {
          expect(m.headers?.get('Nats-Service-Error'), ctx).toContain(viaPort.reason);
          expect(Number(m.headers?.get('Nats-Service-Error-Code')), ctx).toBeGreaterThanOrEqual(400);
        }
      } else {
        expect((tag as Atom).name, ctx).toBe('ok');
        expect(etfMsg.headers?.has('Nats-Service-Error'), ctx).toBe(false);
        const ok = (body as { ok: unknown }).ok;
        if (VOLATILE.has(op) || SAMPLES[op] === undefined) {
          expect(keysOf(value!), ctx).toEqual(keysOf(viaPort.value));
          const jsonKeys = ok !== null && typeof ok === 'object' && !Array.isArray(ok) ? Object.keys(ok).sort() : [];
          expect(jsonKeys, ctx).toEqual(keysOf(viaPort.value));
          if (!isTermObject(viaPort.value)) expect(ok, ctx).toEqual(JSON.parse(JSON.stringify(termToJson(viaPort.value))));
        } else {
          expect(encode(value!).equals(encode(viaPort.value)), ctx).toBe(true);
          expect(ok, ctx).toEqual(JSON.parse(JSON.stringify(termToJson(viaPort.value))));
        }
      }
      checked.push(op);
    }
    expect(checked).toEqual(ops);
  });

  it('echo round-trips term types exactly over ETF (atoms, floats, tuples, binaries, big integers)', async () => {
    const args = record({ at: atom('hello'), f: float(1), t: new Tuple([1, 'two', atom('three')]), b: Buffer.from([0, 255, 1]), big: 2n ** 70n, nested: [record({ k: [] })] });
    const { term } = await requestEtf(nc, 'echo', args);
    expect(encode(term).equals(encode(new Tuple([atom('ok'), args])))).toBe(true);
  });

  it('generate_prompt over JSON gives the prompt the Port gives (only `cached` differs on a repeat)', async () => {
    const args = { context: 'Write a supervisor for three workers', language: 'elixir' };
    const viaPort = await sc.port!.request('generate_prompt', record(args));
    expect(viaPort.ok).toBe(true);
    const { body } = await requestJson(nc, 'generate_prompt', args);
    const ok = (body as { ok: Record<string, unknown> }).ok;
    const port = termToJson((viaPort as { value: Term }).value) as Record<string, unknown>;
    expect(typeof ok.prompt).toBe('string');
    expect({ ...ok, cached: null }).toEqual({ ...port, cached: null });
  });

  it('JSON: empty body is the empty args map; results are wrapped in {"ok": ...}; atoms become strings', async () => {
    expect((await requestJson(nc, 'echo', undefined)).body).toEqual({ ok: {} });
    expect((await requestJson(nc, 'cache_put', { key: 'j', value: [1, 'a'] })).body).toEqual({ ok: 'ok' });
    expect((await requestJson(nc, 'cache_get', { key: 'j' })).body).toEqual({ ok: { found: true, value: [1, 'a'] } });
    const h = (await requestJson(nc, 'health', {})).body as { ok: { status: string; os_pid: number } };
    expect(h.ok.status).toBe('ok');
    expect(h.ok.os_pid).toBe(sc.pid);
  });

  it('echo spin_ms (blocks the event loop) is refused from NATS peers, and nothing was blocked', async () => {
    const t0 = performance.now();
    const r = (await requestJson(nc, 'echo', { spin_ms: 10_000 })).body as { error: { reason: string; message: string } };
    expect(r.error).toMatchObject({ reason: 'bad_request' });
    expect(r.error.message).toMatch(/^spin_ms: .*only through the Port/);
    expect(performance.now() - t0).toBeLessThan(9_000); // it did not spin for its 10 s
  });
});

describe('errors', () => {
  it('bad JSON, non-map args and wrong field types: 400 with headers and {"error": {reason, message}}', async () => {
    const cases: Array<[Uint8Array, string]> = [
      [Buffer.from('{not json'), 'body: expected JSON'],
      [Buffer.from('[1,2]'), 'args: expected a map'],
      [Buffer.from(JSON.stringify({ delay_ms: 'soon' })), 'delay_ms: expected'],
    ];
    for (const [data, msgStart] of cases) {
      const m = await nc.request('prompt_engine.echo', data, { timeout: 5000 });
      expect(m.headers?.get('Nats-Service-Error-Code')).toBe('400');
      expect(m.headers?.get('Nats-Service-Error')).toMatch(/^bad_request: /);
      const body = JSON.parse(Buffer.from(m.data).toString()) as { error: { reason: string; message: string } };
      expect(body.error.reason).toBe('bad_request');
      expect(body.error.message.startsWith(msgStart)).toBe(true);
    }
  });

  it('ETF errors come back as {:error, {reason, message}} in ETF', async () => {
    const garbage = await nc.request('prompt_engine.echo', Buffer.from([131, 200, 1, 2]), { timeout: 5000, headers: etfHeaders() });
    expect(garbage.headers?.get('Nats-Service-Error-Code')).toBe('400');
    const t = decode(Buffer.from(garbage.data)) as Tuple;
    expect((t.items[0] as Atom).name).toBe('error');
    expect(((t.items[1] as Tuple).items[0] as Atom).name).toBe('bad_request');
    const notMap = (await requestEtf(nc, 'echo', [1, 2])).term as Tuple;
    expect(encode(notMap).equals(encode(new Tuple([atom('error'), new Tuple([atom('bad_request'), 'args: expected a map'])])))).toBe(true);
    const cancelledLater = (await requestEtf(nc, 'cache_get', record({}))).term as Tuple;
    expect(((cancelledLater.items[1] as Tuple).items[0] as Atom).name).toBe('bad_request');
  });

  it('an op nobody serves gets the server\'s no-responders error', async () => {
    await expect(nc.request('prompt_engine.no_such_op', Buffer.from('{}'), { timeout: 2000 })).rejects.toMatchObject({ code: '503' });
  });
});

describe('service discovery', () => {
  it('answers $SRV.PING, $SRV.INFO and $SRV.STATS with per-endpoint counts, errors and latency', async () => {
    const ping = JSON.parse(Buffer.from((await nc.request('$SRV.PING.prompt_engine', new Uint8Array(), { timeout: 3000 })).data).toString()) as Record<string, unknown>;
    expect(ping.type).toBe('io.nats.micro.v1.ping_response');
    expect(ping.name).toBe('prompt_engine');
    expect(ping.version).toMatch(/^\d+\.\d+\.\d+/);
    const id = ping.id as string;

    const info = JSON.parse(Buffer.from((await nc.request(`$SRV.INFO.prompt_engine.${id}`, new Uint8Array(), { timeout: 3000 })).data).toString()) as {
      endpoints: Array<{ name: string; subject: string; queue_group: string }>;
      metadata: Record<string, string>;
    };
    expect(info.endpoints.map((e) => e.name).sort()).toEqual(ops.slice().sort());
    for (const e of info.endpoints) {
      expect(e.subject).toBe(`prompt_engine.${e.name}`);
      expect(e.queue_group).toBe('prompt_engine');
    }
    expect(info.metadata.durable_tracking).toBe('jetstream');

    const stats = async (): Promise<{ num_requests: number; num_errors: number; processing_time: number; average_processing_time: number }> => {
      const s = JSON.parse(Buffer.from((await nc.request(`$SRV.STATS.prompt_engine.${id}`, new Uint8Array(), { timeout: 3000 })).data).toString()) as {
        endpoints: Array<{ name: string; num_requests: number; num_errors: number; processing_time: number; average_processing_time: number }>;
      };
      return s.endpoints.find((e) => e.name === 'echo')!;
    };
    const before = await stats();
    await requestJson(nc, 'echo', { delay_ms: 150 });
    await requestJson(nc, 'echo', { delay_ms: 'x' });
    await requestJson(nc, 'echo', {});
    const after = await stats();
    expect(after.num_requests - before.num_requests).toBe(3);
    expect(after.num_errors - before.num_errors).toBe(1);
    // Latency covers the async op, not just the synchronous handler call (150 ms = 1.5e8 ns).
    expect(after.processing_time - before.processing_time).toBeGreaterThanOrEqual(145e6);
    expect(after.average_processing_time).toBeGreaterThan(0);
  });
});

describe('real Erlang payloads', () => {
  const TERM = '#{<<"text">> => <<104,195,169,108,108,111>>, n => 42, f => 1.0, big => 123456789012345678901234567890, l => [1,2,3], t => {a, <<"b">>}, cl => "abc", e => #{}, neg => -7}';
  it('echo answers a term_to_binary/1 body with {:ok, Term} that real Erlang decodes [safe] and finds =:= to what it sent', async () => {
    const hex = execFileSync('erl', ['-noshell', '-eval', `io:format("~s", [binary:encode_hex(term_to_binary(${TERM}))]), halt().`]).toString().trim();
    const { term, msg } = await requestEtf(nc, 'echo', Buffer.from(hex, 'hex'));
    expect(msg.headers?.get('Content-Type')).toBe(ETF_CT);
    expect((term as Tuple).items[0]).toBe(atom('ok'));
    const replyHex = Buffer.from(msg.data).toString('hex');
    const verdict = execFileSync('erl', [
      '-noshell',
      '-eval',
      `T = ${TERM}, R = binary_to_term(binary:decode_hex(<<"${replyHex}">>), [safe]), io:format("~p", [R =:= {ok, T}]), halt().`,
    ])
      .toString()
      .trim();
    expect(verdict).toBe('true');
  });

  it('a track_execution entry encoded by Erlang (atom keys, float, binary-keyed metadata) goes through JetStream into the store', async () => {
    const entry = '#{prompt_id => <<"p-erl">>, execution_time_ms => 12, success => true, confidence_score => 0.9, timestamp => <<"2026-11-24T10:00:00Z">>, metadata => #{<<"k">> => <<"v">>}}';
    const hex = execFileSync('erl', ['-noshell', '-eval', `io:format("~s", [binary:encode_hex(term_to_binary(${entry}))]), halt().`]).toString().trim();
    const { msg } = await requestEtf(nc, 'track_execution', Buffer.from(hex, 'hex'));
    const replyHex = Buffer.from(msg.data).toString('hex');
    const id = execFileSync('erl', ['-noshell', '-eval', `{ok, #{id := Id}} = binary_to_term(binary:decode_hex(<<"${replyHex}">>), [safe]), io:format("~s", [Id]), halt().`])
      .toString()
      .trim();
    expect(id).toMatch(/^[0-9a-f-]{36}$/);
    const rows = await storedRows(id);
    expect(rows).toHaveLength(1);
    expect(rows[0]!.prompt_id).toBe('p-erl');
  });

  it('a JSON entry published straight to the stream (with Nats-Msg-Id, twice) is stored once', async () => {
    const id = randomUUID();
    const js = nc.jetstream();
    const body = Buffer.from(JSON.stringify({ id, prompt_id: 'p-direct', execution_time_ms: 3, success: false, timestamp: '2026-11-24T10:00:00Z', metadata: {} }));
    const first = await js.publish('prompt_engine.track.execution', body, { msgID: id });
    const again = await js.publish('prompt_engine.track.execution', body, { msgID: id });
    expect(first.stream).toBe('PROMPT_ENGINE_TRACK');
    expect(again.duplicate).toBe(true);
    const rows = await storedRows(id);
    expect(rows.map((r) => r.prompt_id)).toEqual(['p-direct']);
  });

  it('compressed term_to_binary(T, [compressed]) bodies are accepted too', async () => {
    const hex = execFileSync('erl', ['-noshell', '-eval', `io:format("~s", [binary:encode_hex(term_to_binary(#{<<"pad">> => binary:copy(<<"ab">>, 500)}, [compressed]))]), halt().`])
      .toString()
      .trim();
    const { term } = await requestEtf(nc, 'echo', Buffer.from(hex, 'hex'));
    const v = (term as Tuple).items[1] as TermObject;
    expect(v.pad).toBe('ab'.repeat(500));
  });
});

describe('shutdown', () => {
  it('SIGTERM: drains (an in-flight request is answered), stops taking new ones, exits 0', async () => {
    const inFlight = requestJson(nc, 'echo', { delay_ms: 700, n: 1 }, 10_000);
    await sleep(150);
    sc.proc.kill('SIGTERM');
    const r = await inFlight;
    expect(r.body).toEqual({ ok: { delay_ms: 700, n: 1 } });
    const exit = await Promise.race([sc.exited, sleep(8000).then(() => 'timeout' as const)]);
    expect(exit).toEqual({ code: 0, signal: null });
    await expect(nc.request('prompt_engine.echo', Buffer.from('{}'), { timeout: 1000 })).rejects.toMatchObject({ code: '503' });
  });
});
