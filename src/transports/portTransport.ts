/**
 * The transports part, Erlang Port side: `{:packet, 4}` ETF frames on a
 * pair of file descriptors (3/4 with `--port-fds`, else 0/1), opened as
 * `net.Socket({fd})` (fs streams on pipes cost three times the latency).
 *
 * It knows frames, request ids, cancellation and shutdown; it knows nothing
 * of what ops do. Requests run concurrently and are answered in completion
 * order. Output honours backpressure: while the output socket is congested
 * input is paused, so a flood of requests cannot grow memory without bound.
 */
import net from 'node:net';
import fs from 'node:fs';
import type { Logger } from 'pino';
import { withTimeout } from '../timeouts.js';
import { decode, encode, EtfError, type DecodeOptions } from '../codec/etf.js';
import { Atom, atom, record, tuple, Tuple, type Term, type TermObject } from '../codec/terms.js';
import type { EngineEvent } from '../engine.js';
import type { AppEngine } from '../services.js';
import { InFlight, RequestContext } from './inFlight.js';
import type { OpResult, OpTable } from '../ops/index.js';
import { PROTOCOL_VERSION, VERSION } from '../version.js';
import { FrameReader } from './frameReader.js';
import { peekRequestId } from './requestId.js';

export interface PortTransportOptions {
  inFd: number;
  outFd: number;
  maxFrameBytes: number;
  /** Requests running at once; beyond it `overloaded`. Default: the engine's config (PROMPT_ENGINE_PORT_MAX_IN_FLIGHT). */
  maxInFlight?: number;
  /** How long in-flight requests may run after input EOF / SIGTERM before they are aborted. */
  drainMs?: number;
}

const A_REPLY = atom('reply');
const A_EVENT = atom('event');
const A_OK = atom('ok');
const A_ERROR = atom('error');

/** Open an fd as a socket; fall back to fs streams for regular files (e.g. input redirected from a file). */
function openInput(fd: number): NodeJS.ReadableStream & { pause(): unknown; resume(): unknown; destroy(): unknown } {
  try {
    return new net.Socket({ fd, readable: true, writable: false });
  } catch {
    return fs.createReadStream('', { fd, autoClose: false });
  }
}

function openOutput(fd: number): NodeJS.WritableStream & { destroyed: boolean; writableNeedDrain: boolean } {
  try {
    return new net.Socket({ fd, readable: false, writable: true });
  } catch {
    return fs.createWriteStream('', { fd, autoClose: false });
  }
}

export class PortTransport {
  private readonly input;
  private readonly output;
  private readonly reader: FrameReader;
  private readonly inFlight: InFlight<number | bigint>;
  /** A compressed frame is held to the frame limit once inflated. Made once: decode runs per frame. */
  private readonly decodeOptions: DecodeOptions;
  private readonly log: Logger;
  private closing: Promise<void> | undefined;
  private outputBroken = false;
  private stats = { frames_in: 0, frames_out: 0, protocol_errors: 0, cancels: 0, overloaded: 0 };
  private readonly onEngineEvent = (e: EngineEvent): void => this.send(tuple(A_EVENT, atom(e.name), e.payload));

  constructor(
    private readonly engine: AppEngine,
    private readonly table: OpTable,
    private readonly opts: PortTransportOptions,
  ) {
    this.log = engine.log.child({ transport: 'port' });
    this.inFlight = new InFlight(opts.maxInFlight ?? engine.config.portMaxInFlight, 'PROMPT_ENGINE_PORT_MAX_IN_FLIGHT');
    this.decodeOptions = { maxDecompressedBytes: opts.maxFrameBytes };
    this.input = openInput(opts.inFd);
    this.output = openOutput(opts.outFd);
    this.reader = new FrameReader(opts.maxFrameBytes, {
      onFrame: (f) => this.onFrame(f),
      onOversized: (n, head) => this.refuse(head, `frame of ${n} bytes exceeds the limit of ${opts.maxFrameBytes}`),
    });
  }

  /**
   * Send the ready handshake once `warmUp` has settled, then start reading:
   * the entry point passes the opening of what the first requests need, so
   * that ready means ready. Nothing is read or sent before the handshake
   * (input that arrives meanwhile waits in the socket; the caller's promise
   * must not reject). Resolves when the transport has shut down, also when
   * that happens before the handshake.
   */
  start(warmUp: Promise<unknown> = Promise.resolve()): Promise<void> {
    const done = new Promise<void>((resolve) => {
      this.resolveDone = resolve;
    });
    this.output.on('error', (err: Error) => {
      // The BEAM closed its end: nobody is left to answer. Shut down.
      this.outputBroken = true;
      this.log.info({ err: err.message }, 'port output closed');
      void this.shutdown('output closed', 0);
    });
    this.engine.registerFigures('port', () => this.figures);
    // EOF and input errors are heard from the start: a pipe that ends while the store opens ends with
    // no one listening otherwise, and the sidecar would outlive its owner.
    // If the parent is gone too (the BEAM was killed), nobody can receive replies: abort at once.
    this.input.on('end', () => void this.shutdown('input EOF', process.ppid !== this.originalPpid ? 0 : undefined));
    this.input.on('error', (err: Error) => {
      this.log.warn({ err: err.message }, 'port input error');
      void this.shutdown('input error');
    });
    void warmUp.then(() => {
      if (this.closing !== undefined) return;
      this.send(
        tuple(
          A_EVENT,
          atom('ready'),
          record({ protocol: PROTOCOL_VERSION, version: VERSION, os_pid: process.pid, ops: this.table.names, max_frame_bytes: this.opts.maxFrameBytes }),
        ),
      );
      this.engine.events.on('event', this.onEngineEvent);
      this.input.on('data', (chunk: Buffer | string) => this.reader.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk));
    });
    return done;
  }

  private resolveDone: (() => void) | undefined;
  private readonly originalPpid = process.ppid;

  get figures(): TermObject {
    const out = this.output as net.Socket;
    return record({
      ...this.stats,
      in_flight: this.inFlight.size,
      pending_input_bytes: this.reader.pendingBytes,
      pending_output_bytes: out.writableLength ?? 0,
      output_paused: this.pausedForDrain,
    });
  }

  private onFrame(buf: Buffer): void {
    this.stats.frames_in++;
    let msg: Term;
    try {
      msg = decode(buf, this.decodeOptions);
    } catch (err) {
      const m = err instanceof EtfError ? `${err.code}: ${err.message}` : String(err);
      return this.refuse(buf, `undecodable frame: ${m}`);
    }
    if (!(msg instanceof Tuple) || !(msg.items[0] instanceof Atom)) return this.protocolError('expected {:req, id, op, args} or {:cancel, id}');
    const kind = msg.items[0].name;
    const id = msg.items[1];
    if (!isRequestId(id)) return this.protocolError('request id must be a non-negative integer');
    if (kind === 'req' && msg.items.length === 4) {
      const op = msg.items[2];
      const opName = op instanceof Atom ? op.name : typeof op === 'string' ? op : undefined;
      if (opName === undefined) return this.reply(id, { ok: false, reason: 'bad_request', message: 'op: expected an atom' });
      return this.startRequest(id, opName, msg.items[3] ?? null);
    }
    if (kind === 'cancel' && msg.items.length === 2) {
      if (this.inFlight.cancel(id)) this.stats.cancels++;
      return;
    }
    this.protocolError(`unknown message {:${kind}, ...} of ${msg.items.length} elements`);
  }

  private startRequest(id: number | bigint, op: string, args: Term): void {
    if (this.closing !== undefined) return this.reply(id, { ok: false, reason: 'shutting_down', message: 'the sidecar is shutting down' });
    if (this.inFlight.has(id)) return this.protocolError(`request id ${id} is already in flight`);
    if (this.inFlight.full) {
      this.stats.overloaded++;
      return this.reply(id, this.inFlight.overloaded());
    }
    void this.inFlight
      .start(id, (c) => this.table.dispatch(op, args, new RequestContext(c, this.engine, this.log, 'port')))
      .then((result) => this.reply(id, result));
  }

  private reply(id: number | bigint, r: OpResult): void {
    const body = r.ok ? tuple(A_OK, r.value) : tuple(A_ERROR, tuple(atom(r.reason), r.message));
    this.send(tuple(A_REPLY, id, body), id);
  }

  /**
   * A frame we cannot take: answer its request id with `bad_request` when
   * its head names one (the caller is not left waiting for its timeout),
   * and report a protocol error either way.
   */
  private refuse(head: Buffer, message: string): void {
    const id = peekRequestId(head);
    this.protocolError(message);
    if (id !== undefined && !this.inFlight.has(id)) this.reply(id, { ok: false, reason: 'bad_request', message });
  }

  private protocolError(message: string): void {
    this.stats.protocol_errors++;
    this.log.warn({ message }, 'protocol error');
    this.send(tuple(A_EVENT, atom('protocol_error'), record({ message })));
  }

  /** Encode and write one frame; pause input while the output is congested. */
  private send(t: Term, id?: number | bigint): void {
    if (this.outputBroken) return;
    let payload: Buffer;
    try {
      payload = encode(t);
    } catch (err) {
      // A result with no Erlang form (NaN, a function): tell the caller instead of dying.
      this.log.error({ err }, 'reply could not be encoded');
      if (id === undefined) return;
      payload = encode(tuple(A_REPLY, id, tuple(A_ERROR, tuple(atom('internal'), `reply could not be encoded: ${(err as Error).message}`))));
    }
    this.stats.frames_out++;
    // Replies finishing in the same tick leave in one write(2).
    if (!this.corked) {
      this.corked = true;
      (this.output as net.Socket).cork?.();
      process.nextTick(() => {
        this.corked = false;
        (this.output as net.Socket).uncork?.();
      });
    }
    // The length prefix and the payload as two writes into the corked stream (one writev): no copy of the payload.
    const header = Buffer.allocUnsafe(4);
    header.writeUInt32BE(payload.length, 0);
    this.output.write(header);
    const okToWrite = this.output.write(payload);
    if (!okToWrite && !this.pausedForDrain) {
      this.pausedForDrain = true;
      this.input.pause();
      this.output.once('drain', () => {
        this.pausedForDrain = false;
        if (this.closing === undefined) this.input.resume();
      });
    }
  }
  private pausedForDrain = false;
  private corked = false;

  /**
   * Stop taking work, let in-flight requests finish (aborting them after
   * `drainMs`), flush output. The engine is not closed here: its owner (the
   * entry point) closes it once every transport has drained. Idempotent.
   */
  shutdown(reason: string, drainMs = this.opts.drainMs ?? 1000): Promise<void> {
    if (this.closing !== undefined) return this.closing;
    this.closing = (async () => {
      this.log.info({ reason, in_flight: this.inFlight.size }, 'draining');
      this.input.pause();
      await this.inFlight.drain(drainMs);
      this.engine.events.off('event', this.onEngineEvent);
      await this.flushOutput();
      this.input.destroy();
      this.resolveDone?.();
    })();
    return this.closing;
  }

  private flushOutput(): Promise<void> {
    if (this.outputBroken || this.output.destroyed) return Promise.resolve();
    return withTimeout(
      new Promise<void>((resolve) => {
        this.output.end(() => resolve());
      }),
      300,
    ).catch(() => undefined);
  }
}

function isRequestId(v: Term | undefined): v is number | bigint {
  return (typeof v === 'number' && Number.isInteger(v) && v >= 0) || (typeof v === 'bigint' && v >= 0n);
}

