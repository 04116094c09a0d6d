/**
 * Runs Erlang helper modules from test/erlang/ with the real `erl`.
 * Modules are compiled once per process into a temp dir.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { decode } from '../../src/codec/etf.js';
import type { Term } from '../../src/codec/terms.js';
import { REPO_ROOT } from '../../src/config.js';

export const REPO = REPO_ROOT;
export const SIDECAR = path.join(REPO, 'port', 'prompt_engine');

let ebin: string | undefined;
export function erlangEbin(): string {
  if (ebin !== undefined) return ebin;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pe-ebin-'));
  const srcDir = path.join(REPO, 'test', 'erlang');
  const files = fs.readdirSync(srcDir).filter((f) => f.endsWith('.erl')).map((f) => path.join(srcDir, f));
  execFileSync('erlc', ['-o', dir, ...files], { stdio: ['ignore', 'inherit', 'inherit'] });
  ebin = dir;
  return dir;
}

/** Run `Module:main(Args)` and return the terms it printed as `result <hex of term_to_binary>` lines. */
export function runErl(module: string, args: string[], opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Term[] {
  const out = execFileSync('erl', ['-noshell', '-pa', erlangEbin(), '-eval', `${module}:main(${erlList(args)})`], {
    timeout: opts.timeoutMs ?? 60_000,
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
    maxBuffer: 64 * 1024 * 1024,
  });
  return parseResults(out.toString());
}

/** Start `Module:main(Args)` in the background (for tests that kill the BEAM). */
export function spawnErl(module: string, args: string[], env?: NodeJS.ProcessEnv): ChildProcess {
  return spawn('erl', ['-noshell', '-pa', erlangEbin(), '-eval', `${module}:main(${erlList(args)})`], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

export function parseResults(text: string): Term[] {
  return text
    .split('\n')
    .filter((l) => l.startsWith('result '))
    .map((l) => decode(Buffer.from(l.slice(7).trim(), 'hex')));
}

function erlList(args: string[]): string {
  return `[${args.map((a) => JSON.stringify(a)).join(',')}]`;
}

/** True while the OS process exists and is not a zombie. */
export function processAlive(pid: number): boolean {
  return parentPid(pid) !== undefined;
}

/** The parent pid of a live process (undefined once it is gone or a zombie). */
export function parentPid(pid: number): number | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const [state, ppid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return state === 'Z' ? undefined : Number(ppid);
  } catch {
    return undefined;
  }
}

export async function waitGone(pid: number, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (!processAlive(pid)) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return !processAlive(pid);
}
