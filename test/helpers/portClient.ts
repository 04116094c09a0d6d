/**
 * A test-side Port peer: spawns the real sidecar (stdio mode by default),
 * speaks {:packet,4} ETF frames, and matches replies by id. Used by suites
 * that drive the sidecar from Node (stdout purity, load, outage tests).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { decode, encode } from '../../src/codec/etf.js';
import { Atom, Tuple, atom, tuple, type Term, type TermObject } from '../../src/codec/terms.js';
import { FrameReader, frame } from '../../src/transports/frameReader.js';
import { SIDECAR } from './erlang.js';

export type Reply = { ok: true; value: Term } | { ok: false; reason: string; message: string };

export class PortClient {
  readonly proc: ChildProcess;
  readonly events: Array<{ name: string; payload: Term }> = [];
  readonly stderr: Buffer[] = [];
  private nextId = 1;
  private readonly pending = new Map<number, (r: Reply) => void>();
  readonly ready: Promise<TermObject>;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(opts: { args?: string[]; env?: NodeJS.ProcessEnv; command?: string; commandArgs?: string[] } = {}) {
    this.proc = spawn(opts.command ?? SIDECAR, [...(opts.commandArgs ?? []), ...(opts.args ?? [])], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, ...opts.env },
    });
    this.proc.stderr!.on('data', (c: Buffer) => this.stderr.push(c));
    let resolveReady!: (t: TermObject) => void;
    this.ready = new Promise((r) => (resolveReady = r));
    const reader = new FrameReader(256 * 1024 * 1024, {
      onFrame: (f) => {
        const t = decode(f);
        if (!(t instanceof Tuple)) throw new Error('bad frame from sidecar');
        const [kind, a, b] = t.items;
        if (kind === atom('event')) {
          const name = (a as Atom).name;
          if (name === 'ready') resolveReady(b as TermObject);
          else this.events.push({ name, payload: b ?? null });
        } else if (kind === atom('reply')) {
          const res = b as Tuple;
          const cb = this.pending.get(a as number);
          this.pending.delete(a as number);
          if (res.items[0] === atom('ok')) cb?.({ ok: true, value: res.items[1] ?? null });
          else {
            const err = res.items[1] as Tuple;
            cb?.({ ok: false, reason: (err.items[0] as Atom).name, message: String(err.items[1]) });
          }
        }
      },
      onOversized: () => {
        throw new Error('oversized frame from sidecar');
      },
    });
    this.proc.stdout!.on('data', (c: Buffer) => reader.push(c));
    this.exited = new Promise((resolve) => this.proc.on('exit', (code, signal) => resolve({ code, signal })));
    this.proc.stdin!.on('error', () => undefined);
  }

  get pid(): number {
    return this.proc.pid!;
  }

  request(op: string, args: TermObject, id = this.nextId++): Promise<Reply> {
    return new Promise((resolve) => {
      this.pending.set(id, resolve);
      this.sendTerm(tuple(atom('req'), id, atom(op), args));
    });
  }

  /** The reply to a request this client did not send through `request` (raw frames): resolves when its id is answered. */
  awaitReply(id: number): Promise<Reply> {
    return new Promise((resolve) => this.pending.set(id, resolve));
  }

  /** The next id `request` will use. */
  peekId(): number {
    return this.nextId;
  }

  cancel(id: number): void {
    this.sendTerm(tuple(atom('cancel'), id));
  }

  sendTerm(t: Term): void {
    this.proc.stdin!.write(frame(encode(t)));
  }

  sendRaw(bytes: Buffer): void {
    this.proc.stdin!.write(bytes);
  }

  async close(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    this.proc.stdin!.end();
    return this.exited;
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    this.proc.kill(signal);
  }
}
