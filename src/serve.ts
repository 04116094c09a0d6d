/**
 * `serve`: NATS peer mode, optionally with the Port and the dashboard in the same process.
 *   prompt-engine serve --nats <url>[,<url>...] [--port [--port-fds]] [--http host:port]
 *   prompt-engine serve --http host:port          the dashboard alone (also `prompt-engine dashboard`)
 * Connection settings beyond the URL come from NATS_* variables (nats/options.ts).
 *
 * SIGTERM/SIGINT: NATS drains first (unsubscribe so other instances take new
 * requests, finish in-flight ones, ack tracking writes), then the Port
 * drains and the engine closes (flushes the store), then exit.
 */
import { configFromFlags } from './config.js';
import { createEngine } from './services.js';
import { withTimeout } from './timeouts.js';
import { createLogger } from './log.js';
import { createOpTable } from './ops/index.js';
import { startNatsService } from './transports/natsService.js';
import { PortTransport } from './transports/portTransport.js';
import { startParentWatchdog } from './transports/watchdog.js';
import { redirectStdoutToStderr } from './transports/stdioGuard.js';
import { startEngineDashboard, type DashboardHandle } from './dashboard/server.js';

/** `dashboardOnly`: the page and nothing else (the `dashboard` verb), NATS_URL or not. */
export async function runServe(flags: Map<string, string | true>, opts: { dashboardOnly?: boolean } = {}): Promise<number> {
  const withPort = flags.has('port') && opts.dashboardOnly !== true;
  const portFds = flags.has('port-fds');
  if (withPort && !portFds) redirectStdoutToStderr();
  let config: ReturnType<typeof configFromFlags>;
  try {
    // `dashboard` without --http or PROMPT_ENGINE_DASHBOARD serves it on loopback.
    config = configFromFlags(flags, undefined, opts.dashboardOnly === true ? { dashboard: '127.0.0.1:4050' } : {});
  } catch (err) {
    process.stderr.write(`prompt-engine: ${(err as Error).message}\n`);
    return 2;
  }
  const log = createLogger(config.logLevel);
  const withNats = config.natsUrl !== undefined && opts.dashboardOnly !== true;
  if (!withNats && config.dashboard === undefined) {
    log.error('serve: no NATS server (give --nats <url> or set NATS_URL) and no dashboard (--http host:port)');
    return 2;
  }
  const engine = createEngine(config, log);
  const table = createOpTable();
  let dashboard: DashboardHandle | undefined;
  if (config.dashboard !== undefined) {
    try {
      dashboard = await startEngineDashboard(engine, table, config.dashboard, config.dashboardToken);
    } catch (err) {
      log.error({ err: (err as Error).message }, 'dashboard refused to start');
      process.stderr.write(`prompt-engine: ${(err as Error).message}\n`);
      return 2;
    }
    if (!withPort) process.stderr.write(`prompt-engine: dashboard on ${dashboard.url}/\n`);
  }
  const transport = withPort ? new PortTransport(engine, table, { inFd: portFds ? 3 : 0, outFd: portFds ? 4 : 1, maxFrameBytes: config.maxFrameBytes }) : undefined;
  // With a Port, its ready handshake must not wait for NATS: connect in the background.
  const nats = withNats ? await startNatsService(engine, table, { connectWaitMs: withPort ? 0 : 3000 }) : undefined;

  let stopping: Promise<void> | undefined;
  let resolveStopped!: () => void;
  const stopped = new Promise<void>((r) => (resolveStopped = r));
  const stop = (why: string): Promise<void> =>
    (stopping ??= (async () => {
      log.info({ reason: why }, 'shutting down');
      await dashboard?.close();
      await nats?.stop();
      if (transport !== undefined) await transport.shutdown(why);
      await withTimeout(engine.close(), 2000).catch((err: unknown) => log.error({ err }, 'engine close failed'));
      resolveStopped();
    })());
  process.once('SIGTERM', () => void stop('SIGTERM'));
  process.once('SIGINT', () => void stop('SIGINT'));
  process.on('SIGPIPE', () => undefined);
  // With PostgreSQL the store starts now, not on the first request (journal replay at start; no stall
  // on the first track). PGlite opens on first use.
  if (config.databaseUrl !== undefined) void engine.service('store').catch(() => undefined);
  const watchdog = withPort ? startParentWatchdog(() => void stop('parent process gone')) : undefined;
  if (transport !== undefined) {
    // Port EOF ends the process too (the BEAM that owns us is gone).
    await transport.start();
    await stop('port closed');
  } else {
    // The NATS connection keeps the loop alive (also while it reconnects); the timer covers the gap before it connects.
    const keepAlive = setInterval(() => undefined, 1 << 30);
    await stopped;
    clearInterval(keepAlive);
  }
  await stopping;
  await watchdog?.stop();
  return 0;
}
