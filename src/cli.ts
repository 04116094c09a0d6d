#!/usr/bin/env node
/**
 * The `prompt-engine` command.
 *   prompt-engine port [--port-fds] [--max-frame-bytes N]   serve the Erlang Port protocol (what the Elixir client runs)
 *   prompt-engine serve --nats <url> [--port [--port-fds]]  serve every op as a NATS service (optionally the Port too)
 * Environment: DATABASE_URL, NATS_URL, LOG_LEVEL, PROMPT_ENGINE_DATA_DIR, ...
 */
import { configFromFlags } from './config.js';
import { createEngine } from './services.js';
import { withTimeout } from './transports/timeouts.js';
import { createLogger } from './log.js';
import { createOpTable } from './ops/index.js';
import type { OpSpec } from './ops/types.js';
import { PortTransport } from './transports/portTransport.js';
import { startParentWatchdog } from './transports/watchdog.js';
import { runServe } from './serve.js';
import { redirectStdoutToStderr } from './transports/stdioGuard.js';

export interface CliArgs {
  command: string;
  flags: Map<string, string | true>;
}

export function parseArgs(argv: string[]): CliArgs {
  const flags = new Map<string, string | true>();
  let command = 'port';
  let i = 0;
  if (argv[0] !== undefined && !argv[0].startsWith('--')) {
    command = argv[0];
    i = 1;
  }
  for (; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith('--')) throw new Error(`unexpected argument ${a}`);
    const eq = a.indexOf('=');
    if (eq > 0) flags.set(a.slice(2, eq), a.slice(eq + 1));
    else if (argv[i + 1] !== undefined && !argv[i + 1]!.startsWith('--') && VALUE_FLAGS.has(a.slice(2))) flags.set(a.slice(2), argv[++i]!);
    else flags.set(a.slice(2), true);
  }
  return { command, flags };
}
const VALUE_FLAGS = new Set(['nats', 'max-frame-bytes', 'data-dir', 'database-url', 'log-level']);

export async function runPort(flags: Map<string, string | true>, extraOps: OpSpec<unknown>[] = []): Promise<number> {
  const portFds = flags.has('port-fds');
  if (!portFds) redirectStdoutToStderr();
  const config = configFromFlags(flags);
  const log = createLogger(config.logLevel);
  const engine = createEngine(config, log);
  const table = createOpTable();
  for (const op of extraOps) table.add(op);
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
  const done = transport.start();
  // With PostgreSQL, start the store now, not on the first request: what an earlier process left in the
  // journal is replayed at once. PGlite opens on first use (sidecars of a pool may share its directory).
  if (config.databaseUrl !== undefined) void engine.service('store').catch(() => undefined);
  await done;
  // The entry point owns the engine: close it (flushes tracking writes to the store or the journal) once the Port has drained.
  await withTimeout(engine.close(), 2000).catch((err: unknown) => log.error({ err }, 'engine close failed'));
  await watchdog?.stop();
  log.info('port transport stopped');
  return 0;
}

async function main(argv: string[]): Promise<void> {
  const { command, flags } = parseArgs(argv);
  switch (command) {
    case 'port':
      process.exitCode = await runPort(flags);
      break;
    case 'serve':
      process.exitCode = await runServe(flags);
      break;
    default:
      process.stderr.write(`prompt-engine: unknown command ${command}\nusage: prompt-engine port [--port-fds] | serve --nats <url>\n`);
      process.exitCode = 2;
  }
  // Sockets on inherited fds can keep the loop alive; we are done.
  setImmediate(() => process.exit(process.exitCode ?? 0));
}

const isMain = process.argv[1] !== undefined && import.meta.url === new URL(`file://${process.argv[1]}`).href;
if (isMain) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    process.stderr.write(`prompt-engine: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  });
}
export { main };
