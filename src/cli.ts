#!/usr/bin/env node
/**
 * The `prompt-engine` command: picks the verb and owns the process's exit.
 *   prompt-engine port [--port-fds]            the Erlang Port protocol (what the Elixir client runs); refuses a terminal
 *   prompt-engine serve --nats <url> [--port]   every op as a NATS service (optionally the Port too; --http: the dashboard)
 *   prompt-engine dashboard [--http host:port]  the dashboard alone (docs/dashboard.md)
 *   prompt-engine call|health|render|optimize|choose|train|stats|query|experiments|ops ...
 *                                               the engine in this process, for daily jobs (cli/verbs.ts)
 * The grammar (flags, --help, unknown flags → exit 2) is cli/args.ts; tables are cli/table.ts.
 * Configuration: docs/configuration.md.
 */
import fs from 'node:fs';
import tty from 'node:tty';
import { fileURLToPath } from 'node:url';
import { configFromFlags } from './config.js';
import { createEngine, type AppEngine } from './services.js';
import { withTimeout } from './timeouts.js';
import { createLogger, type Logger } from './log.js';
import { createOpTable } from './ops/index.js';
import type { OpSpec } from './ops/types.js';
import { PortTransport } from './transports/portTransport.js';
import { startParentWatchdog } from './transports/watchdog.js';
import { runServe } from './serve.js';
import { redirectStdoutToStderr } from './transports/stdioGuard.js';
import { parseVerbArgs, usageLine, verbHelp, UsageError, type FlagSpec, type ParsedArgs } from './cli/args.js';
import { ENGINE_VERBS, type Verb } from './cli/verbs.js';
import { DashboardRefused, startEngineDashboard, type DashboardHandle } from './dashboard/server.js';

const HTTP_FLAG: FlagSpec = { name: 'http', type: 'string', value: 'HOST:PORT', doc: 'serve the dashboard here (default PROMPT_ENGINE_DASHBOARD; loopback unless PROMPT_ENGINE_DASHBOARD_TOKEN is set)' };

const SERVER_FLAGS: readonly FlagSpec[] = [
  { name: 'data-dir', type: 'string', value: 'DIR', doc: 'PGlite, journal and trained models (default PROMPT_ENGINE_DATA_DIR, else .data/)' },
  { name: 'database-url', type: 'string', value: 'URL', doc: 'PostgreSQL instead of PGlite (default DATABASE_URL)' },
  { name: 'log-level', type: 'string', value: 'LEVEL', doc: 'pino level of the logs on stderr (default LOG_LEVEL, else info)' },
  { name: 'max-frame-bytes', type: 'int', value: 'N', doc: 'refuse Port frames above this size (default PROMPT_ENGINE_MAX_FRAME_BYTES, 64 MiB)' },
];

/** Flags as the config and transports read them (`--x` → 'x' → string or true). */
function flagMap(p: ParsedArgs): Map<string, string | true> {
  const m = new Map<string, string | true>();
  for (const [k, v] of p.flags) m.set(k, v === true ? true : String(v));
  return m;
}

/**
 * Why the Port must not start on these fds, if it must not: frames on a
 * terminal are binary garbage to a person, and a person's typing is garbage
 * to the frame reader. The Elixir client's Port is never a terminal.
 */
export function portRefusal(inFd: number, outFd: number, isatty: (fd: number) => boolean = tty.isatty, isOpen: (fd: number) => boolean = fdOpen): string | undefined {
  const closed = [inFd, outFd].filter((fd) => !isOpen(fd));
  if (closed.length > 0)
    return `fd ${closed.join(' and ')} not open to this process: \`port${inFd === 3 ? ' --port-fds' : ''}\` reads frames from fd ${inFd} and writes them to fd ${outFd}, which the spawning process opens (Erlang's :nouse_stdio opens 3 and 4)`;
  const which = [inFd, outFd].filter((fd) => isatty(fd));
  if (which.length === 0) return undefined;
  return (
    `refusing to run on a terminal (fd ${which.join(' and ')}): \`port\` speaks {packet, 4} Erlang terms to the process that spawned it ` +
    '(the Elixir client does). For the engine on the command line see `prompt-engine --help` (e.g. `prompt-engine call health`).'
  );
}

/**
 * Whether `fd` is something a spawner handed us (a pipe, socket, terminal or
 * file). When fds 3/4 were not inherited, Node's own epoll instance (an anon
 * inode, no file type) and its internal pipes take those numbers at start:
 * reading them as frames aborts the process.
 */
function fdOpen(fd: number): boolean {
  try {
    const s = fs.fstatSync(fd);
    return s.isFIFO() || s.isSocket() || s.isCharacterDevice() || s.isFile();
  } catch {
    return false;
  }
}

const port: Verb = {
  name: 'port',
  summary: 'serve the Erlang Port protocol on fds 3/4 (--port-fds) or stdin/stdout: what the Elixir client spawns (docs/protocol.md). Refuses a terminal.',
  positionals: [],
  flags: [{ name: 'port-fds', type: 'bool', doc: 'frames on fds 3 (in) and 4 (out), as the Elixir client opens them (:nouse_stdio)' }, { name: 'nats', type: 'string', value: 'URL', doc: 'NATS for central_cloud templates (default NATS_URL)' }, ...SERVER_FLAGS],
  run: (p) => runPort(flagMap(p)),
};

const serve: Verb = {
  name: 'serve',
  summary: 'serve every op as a NATS micro-service, prompt_engine.<op> in queue group prompt_engine (docs/nats.md); with --port, the Port too',
  positionals: [],
  flags: [
    { name: 'nats', type: 'string', value: 'URLS', doc: 'comma-separated NATS servers (default NATS_URL)' },
    { name: 'port', type: 'bool', doc: 'serve the Erlang Port in the same process' },
    { name: 'port-fds', type: 'bool', doc: 'with --port: frames on fds 3/4' },
    HTTP_FLAG,
    ...SERVER_FLAGS,
  ],
  examples: ['prompt-engine serve --nats nats://10.0.0.5:4222,nats://10.0.0.6:4222', 'prompt-engine serve --nats nats://127.0.0.1:4222 --http 127.0.0.1:4050'],
  run: (p) => runServe(flagMap(p)),
};

const dashboard: Verb = {
  name: 'dashboard',
  summary: 'serve the dashboard alone (experiments, tracked prompts, models, health) on --http, default 127.0.0.1:4050 (docs/dashboard.md)',
  positionals: [],
  flags: [HTTP_FLAG, { name: 'nats', type: 'string', value: 'URL', doc: 'NATS for central_cloud templates (default NATS_URL)' }, ...SERVER_FLAGS],
  examples: ['prompt-engine dashboard --database-url postgres://localhost/prompts', 'PROMPT_ENGINE_DASHBOARD_TOKEN=... prompt-engine dashboard --http 127.0.0.1:4050'],
  run: (p) => runServe(flagMap(p), { dashboardOnly: true }),
};

export const VERBS: readonly Verb[] = [port, serve, dashboard, ...ENGINE_VERBS];

function globalHelp(): string {
  const w = Math.max(...VERBS.map((v) => v.name.length));
  return [
    'usage: prompt-engine <command> [arguments] [flags]',
    '',
    'commands:',
    ...VERBS.map((v) => `  ${v.name.padEnd(w)}  ${v.summary}`),
    '',
    '`prompt-engine <command> --help` lists a command\'s flags. Output is a table; --json prints JSON.',
    'Exit status: 0 ok, 1 the op failed (reason and message on stderr), 2 a usage mistake.',
    'Configuration (DATABASE_URL, PROMPT_ENGINE_DATA_DIR, NATS_URL, LLM_URL, ...): docs/configuration.md.',
    '',
  ].join('\n');
}

export async function runPort(flags: Map<string, string | true>, extraOps: OpSpec<unknown>[] = []): Promise<number> {
  const portFds = flags.has('port-fds');
  const refusal = portRefusal(portFds ? 3 : 0, portFds ? 4 : 1);
  if (refusal !== undefined) {
    process.stderr.write(`prompt-engine port: ${refusal}\n`);
    return 2;
  }
  if (!portFds) redirectStdoutToStderr();
  const config = configFromFlags(flags);
  const log = createLogger(config.logLevel);
  const engine = createEngine(config, log);
  const table = createOpTable();
  for (const op of extraOps) table.add(op);
  // PROMPT_ENGINE_DASHBOARD (the Elixir client's `dashboard:` option): this sidecar serves the page too.
  // A refused configuration ends the sidecar at start (the message says why); a port in use only costs the page.
  let dashboard: DashboardHandle | undefined;
  if (config.dashboard !== undefined) {
    try {
      dashboard = await startEngineDashboard(engine, table, config.dashboard, config.dashboardToken);
    } catch (err) {
      log.error({ err: (err as Error).message }, 'dashboard not started');
      if (err instanceof DashboardRefused) {
        process.stderr.write(`prompt-engine port: ${(err as Error).message}\n`);
        return 2;
      }
    }
  }
  const transport = new PortTransport(engine, table, {
    inFd: portFds ? 3 : 0,
    outFd: portFds ? 4 : 1,
    maxFrameBytes: config.maxFrameBytes,
  });
  const stop = (why: string) => () => void transport.shutdown(why);
  process.once('SIGTERM', stop('SIGTERM'));
  process.once('SIGINT', stop('SIGINT'));
  process.on('SIGPIPE', () => undefined);
  const watchdog = startParentWatchdog(() => void transport.shutdown('parent process gone', 0));
  const done = transport.start(openBeforeReady(engine, log));
  await done;
  await dashboard?.close();
  // The entry point owns the engine: close it (flushes tracking writes to the store or the journal) once the Port has drained.
  await withTimeout(engine.close(), 2000).catch((err: unknown) => log.error({ err }, 'engine close failed'));
  await watchdog?.stop();
  log.info('port transport stopped');
  return 0;
}

/** How long the Port's handshake may wait for the store and the scorer (the Elixir client's ready_timeout is 60 s). */
const OPEN_BEFORE_READY_MS = 45_000;

/**
 * Ready means ready: the store (PostgreSQL or PGlite, with what an earlier
 * process left in the journal replayed) and the scorer are opened before the
 * Port's handshake, so the first choose_prompt, score and track_execution
 * are answered within the client's default timeout instead of waiting on a
 * cold start. A store that cannot open does not hold the handshake: it is
 * logged, ready is sent, and `health` reports the database. Never rejects.
 */
async function openBeforeReady(engine: AppEngine, log: Logger): Promise<void> {
  const t0 = Date.now();
  const opened = Promise.allSettled([engine.service('store'), engine.service('scorer')]).then(([store, scorer]) => {
    if (store.status === 'rejected') log.warn({ err: (store.reason as Error).message }, 'tracking store did not open before the handshake; serving without it');
    if (scorer.status === 'rejected') log.warn({ err: (scorer.reason as Error).message }, 'scorer did not load before the handshake');
  });
  await withTimeout(opened, OPEN_BEFORE_READY_MS).catch(() => log.warn({ ms: OPEN_BEFORE_READY_MS }, 'store or scorer still opening at the handshake; requests that need them wait'));
  log.info({ ms: Date.now() - t0 }, 'store and scorer open: ready');
}

/** Run one command line; resolves with the exit status. */
export async function run(argv: readonly string[]): Promise<number> {
  const first = argv[0];
  if (first === '--help' || first === '-h' || first === 'help') {
    process.stdout.write(globalHelp());
    return 0;
  }
  // No verb, or flags first: the Port, as before verbs existed (port/prompt_engine and older clients).
  const name = first === undefined || first.startsWith('-') ? 'port' : first;
  const rest = first === undefined || first.startsWith('-') ? argv : argv.slice(1);
  const verb = VERBS.find((v) => v.name === name);
  if (verb === undefined) {
    process.stderr.write(`prompt-engine: unknown command ${JSON.stringify(name)}\n\n${globalHelp()}`);
    return 2;
  }
  try {
    const p = parseVerbArgs(verb, rest);
    if (p.help) {
      process.stdout.write(verbHelp(verb));
      return 0;
    }
    return await verb.run(p);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`prompt-engine ${verb.name}: ${err.message}\nusage: ${usageLine(verb)}   (prompt-engine ${verb.name} --help)\n`);
    return 2;
  }
}

async function main(argv: string[]): Promise<void> {
  process.exitCode = await run(argv);
  // Sockets on inherited fds can keep the loop alive; we are done.
  setImmediate(() => process.exit(process.exitCode ?? 0));
}

// Through npm's bin link argv[1] is the link: compare real paths.
const isMain = process.argv[1] !== undefined && fs.existsSync(process.argv[1]) && fs.realpathSync(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    process.stderr.write(`prompt-engine: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  });
}
export { main };
