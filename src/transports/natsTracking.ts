/**
 * Durable tracking through JetStream (README: NATS peer mode). A `track_*` request is
 * validated, given an entry id (a UUID, unless the caller sent one), and
 * published to the stream PROMPT_ENGINE_TRACK on
 * `prompt_engine.track.<kind>` with the id as `Nats-Msg-Id`, so a retried
 * publish of the same entry is dropped by the server (duplicate window).
 * The caller is answered once the stream has the entry (PubAck).
 *
 * Every sidecar also pulls from one durable consumer shared by all
 * instances and writes each entry through the same op handler the Port
 * uses (`table.dispatch('track_<kind>', entry)`), acking only after the
 * store has committed it. A sidecar killed mid-write leaves the message
 * unacked; after `ack_wait` it is redelivered (to any instance) and the
 * store's id-idempotence makes the second write a no-op.
 */
import { randomUUID } from 'node:crypto';
import { AckPolicy, DeliverPolicy, headers as natsHeaders, RetentionPolicy, StorageType, type ConsumerMessages, type JetStreamClient, type JetStreamManager, type JsMsg, type NatsConnection } from 'nats';
import type { Logger } from 'pino';
import { encode } from '../codec/etf.js';
import { isTermObject, record, type Term, type TermObject } from '../codec/terms.js';
import { whenColumnOf, type EntryKind } from '../store/entries.js';
import type { AppEngine } from '../services.js';
import { InFlight } from './inFlight.js';
import type { OpResult, OpTable } from '../ops/index.js';
import type { ErrorReason } from '../contract/errors.js';
import { encodingOf, ETF_CONTENT_TYPE, parseArgs } from './natsPayload.js';

export interface TrackingStreamOptions {
  prefix: string;
  stream: string;
  durable: string;
  ackWaitMs: number;
  /** Server-side dedupe window for `Nats-Msg-Id`. */
  duplicateWindowMs: number;
  /** Entries written concurrently by this instance (the store group-commits them). */
  concurrency: number;
  publishTimeoutMs: number;
}

export const DEFAULT_TRACKING: Omit<TrackingStreamOptions, 'prefix'> = {
  stream: 'PROMPT_ENGINE_TRACK',
  durable: 'prompt_engine_track',
  ackWaitMs: 10_000,
  duplicateWindowMs: 10 * 60_000,
  concurrency: 256,
  publishTimeoutMs: 5_000,
};

/** Errors that a retry cannot fix: the message is terminated (and logged) instead of redelivered forever. */
const PERMANENT: ReadonlySet<ErrorReason> = new Set(['bad_request', 'unknown_op', 'not_found', 'conflict', 'insufficient_data']);

const nanos = (ms: number): number => ms * 1_000_000;

/**
 * How long a write that failed for now (the store unavailable and its journal
 * full, say) waits before JetStream hands it out again: 1 s after the first
 * delivery, doubling with each, at most 60 s, so a long outage is not a
 * redelivery of every pending entry every second.
 */
export function redeliveryDelayMs(deliveryCount: number): number {
  return Math.min(60_000, 1_000 * 2 ** Math.min(Math.max(deliveryCount - 1, 0), 6));
}

export class TrackingStream {
  private js: JetStreamClient | undefined;
  private messages: ConsumerMessages | undefined;
  private stopping = false;
  private loop: Promise<void> | undefined;
  private readonly inFlight = new InFlight<number>();
  readonly figures = { published: 0, duplicates: 0, written: 0, redelivered: 0, terminated: 0, retried: 0 };

  constructor(
    private readonly nc: NatsConnection,
    private readonly engine: AppEngine,
    private readonly table: OpTable,
    private readonly log: Logger,
    private readonly opts: TrackingStreamOptions,
  ) {}

  /** Ensure the stream and the durable consumer; false when the server has no JetStream, or they cannot be made. */
  async setup(): Promise<boolean> {
    let jsm: JetStreamManager;
    try {
      jsm = await this.nc.jetstreamManager({ timeout: 3000 });
      await jsm.getAccountInfo();
    } catch (err) {
      this.log.info({ err: (err as Error).message }, 'JetStream not available: tracking goes straight to the store');
      return false;
    }
    try {
      await this.ensure(jsm);
    } catch (err) {
      // JetStream is there but the stream or its consumer cannot be made (no permission to create them,
      // another stream already takes these subjects): serve anyway, tracking straight to the store.
      this.log.warn({ err: (err as Error).message, stream: this.opts.stream }, 'JetStream tracking stream not set up: tracking goes straight to the store');
      return false;
    }
    this.js = this.nc.jetstream({ timeout: this.opts.publishTimeoutMs });
    this.loop = this.consumeLoop();
    return true;
  }

  get enabled(): boolean {
    return this.js !== undefined;
  }

  private async ensure(jsm: JetStreamManager): Promise<void> {
    const subjects = [`${this.opts.prefix}.track.>`];
    const cfg = {
      name: this.opts.stream,
      subjects,
      retention: RetentionPolicy.Workqueue,
      storage: StorageType.File,
      duplicate_window: nanos(this.opts.duplicateWindowMs),
    };
    try {
      await jsm.streams.info(this.opts.stream);
    } catch {
      try {
        await jsm.streams.add(cfg);
      } catch (err) {
        // Another instance created it in between.
        await jsm.streams.info(this.opts.stream).catch(() => {
          throw err;
        });
      }
    }
    const ccfg = {
      durable_name: this.opts.durable,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      ack_wait: nanos(this.opts.ackWaitMs),
      max_deliver: -1,
      max_ack_pending: 10_000,
      filter_subject: `${this.opts.prefix}.track.>`,
    };
    try {
      const info = await jsm.consumers.info(this.opts.stream, this.opts.durable);
      // Made by an earlier start with another ack wait (PROMPT_ENGINE_TRACK_ACK_WAIT_MS changed since): the setting wins.
      if (info.config.ack_wait !== ccfg.ack_wait) await jsm.consumers.update(this.opts.stream, this.opts.durable, { ack_wait: ccfg.ack_wait });
    } catch {
      await jsm.consumers.add(this.opts.stream, ccfg).catch(async (err: unknown) => {
        await jsm.consumers.info(this.opts.stream, this.opts.durable).catch(() => {
          throw err;
        });
      });
    }
  }

  /**
   * Publish one entry; resolves with the op's reply once the stream has it.
   * `args` must already be valid for `op`. Falls back to the direct op path
   * when the stream cannot be reached (the store dedupes by id either way).
   * The stream's ack is awaited for at most half the request's deadline
   * (`deadlineMs`, and at most `publishTimeoutMs`): a stream that does not
   * answer leaves the other half to the direct write, so the caller is
   * answered rather than timed out.
   */
  async publish(op: string, args: TermObject, signal: AbortSignal, deadlineMs = this.opts.publishTimeoutMs * 2): Promise<OpResult> {
    const kind = this.table.durableKindOf(op)!;
    // The same id the op would answer with (the store keeps UUIDs lower-case).
    const given = args['id'];
    const id = typeof given === 'string' && given !== '' ? given.toLowerCase() : randomUUID();
    args['id'] = id;
    // Absent, when it happened is the time of the call (as on the Port), not the time a consumer writes it.
    stampIfAbsent(kind, args, Date.now());
    const h = natsHeaders();
    h.set('Content-Type', ETF_CONTENT_TYPE);
    try {
      const timeout = Math.max(1, Math.min(this.opts.publishTimeoutMs, Math.floor(deadlineMs / 2)));
      const ack = await this.js!.publish(`${this.opts.prefix}.track.${kind}`, encode(args), { msgID: id, headers: h, timeout });
      this.figures.published++;
      if (ack.duplicate) this.figures.duplicates++;
      return { ok: true, value: trackReply(id) };
    } catch (err) {
      this.log.warn({ err: (err as Error).message, op }, 'JetStream publish failed; writing through the store directly');
      return this.table.dispatch(op, args, { signal, engine: this.engine, log: this.log, transport: 'nats' });
    }
  }

  /** Pull from the durable consumer until stopped; restart the pull after errors (server restart, consumer lost). */
  private async consumeLoop(): Promise<void> {
    let backoff = 250;
    while (!this.stopping) {
      try {
        const jsm = await this.nc.jetstreamManager({ timeout: 3000 });
        await this.ensure(jsm);
        const consumer = await this.js!.consumers.get(this.opts.stream, this.opts.durable);
        // A consumer deleted under us ends the iteration (the default keeps polling for it forever): ensure() makes it again.
        this.messages = await consumer.consume({ max_messages: this.opts.concurrency, abort_on_missing_resource: true });
        backoff = 250;
        for await (const m of this.messages) {
          if (this.stopping) {
            // Not taken: left unacked, redelivered to an instance that is still running.
            m.nak();
            continue;
          }
          await this.inFlight.below(this.opts.concurrency);
          void this.inFlight.start(this.inFlight.key(), (c) => this.write(m, c.signal));
        }
      } catch (err) {
        if (this.stopping) break;
        this.log.warn({ err: (err as Error).message }, 'tracking consumer interrupted; retrying');
      }
      if (this.stopping) break;
      await new Promise((r) => setTimeout(r, backoff));
      backoff = Math.min(backoff * 2, 5000);
    }
  }

  private async write(m: JsMsg, signal: AbortSignal): Promise<void> {
    const kind = m.subject.slice(`${this.opts.prefix}.track.`.length);
    const op = this.table.opOfDurableKind(kind);
    if (op === undefined) {
      this.figures.terminated++;
      this.log.error({ subject: m.subject, seq: m.seq }, 'tracking entry of an unknown kind in the stream; terminated');
      m.term();
      return;
    }
    if (m.redelivered) this.figures.redelivered++;
    // Entries we published are ETF; a client may also publish JSON straight to the stream.
    const parsed = parseArgs(m.data, encodingOf(m.headers));
    if (!parsed.ok) {
      this.figures.terminated++;
      this.log.error({ message: parsed.message, seq: m.seq }, 'undecodable tracking entry in the stream; terminated');
      m.term();
      return;
    }
    const args: Term = parsed.args;
    // An entry published straight to the stream without its time: the time the stream took it.
    if (isTermObject(args)) stampIfAbsent(kind, args, Math.floor(m.info.timestampNanos / 1e6));
    const r = await this.table.dispatch(op, args, { signal, engine: this.engine, log: this.log, transport: 'nats' });
    if (r.ok) {
      this.figures.written++;
      try {
        await m.ackAck({ timeout: 5000 });
      } catch {
        // The ack was lost (connection gone): the entry is redelivered and deduped by id.
      }
    } else if (PERMANENT.has(r.reason)) {
      this.figures.terminated++;
      this.log.error({ op, reason: r.reason, message: r.message, seq: m.seq }, 'tracking entry rejected by the store; terminated');
      m.term(`${r.reason}: ${r.message}`);
    } else {
      this.figures.retried++;
      const delayMs = redeliveryDelayMs(m.info.deliveryCount);
      this.log.warn({ op, reason: r.reason, message: r.message, deliveries: m.info.deliveryCount, retry_in_ms: delayMs }, 'tracking write failed; redelivering');
      m.nak(delayMs);
    }
  }

  /** Stop pulling, finish and ack the writes in flight. */
  async stop(): Promise<void> {
    this.stopping = true;
    try {
      await this.messages?.close();
    } catch {
      /* already closed */
    }
    // Writes are never aborted: an entry taken from the stream is committed and acked, or left for redelivery.
    await this.inFlight.drain(30_000);
    await Promise.race([this.loop, new Promise((r) => setTimeout(r, 1000).unref())]);
  }
}

/** What a `track_*` request answers through the stream (the same shape as the op's own reply). */
export function trackReply(id: string): Term {
  return record({ id });
}

/** Give an entry the time it happened when it has none (`kind` is a tracking kind: the op table's durable kinds are the store's entry kinds). */
function stampIfAbsent(kind: string, args: TermObject, ms: number): void {
  const column = whenColumnOf(kind as EntryKind);
  if (args[column] === undefined) args[column] = new Date(ms).toISOString();
}
