/**
 * Structured logs (pino) to stderr only: in the Port's stdio mode stdout
 * carries frames and nothing else. Prompt text is logged at debug level
 * at most, never at info.
 */
import pino, { type Logger } from 'pino';

export type { Logger };

/**
 * `level`: the config's `logLevel` (LOG_LEVEL). `destination` replaces stderr for callers that read their own log records
 * (the CLI's `train` turns epoch records into a progress bar); it receives
 * each JSON line.
 */
export function createLogger(level: string, name = 'prompt-engine', destination?: (line: string) => void): Logger {
  if (destination !== undefined) return pino({ name, level, base: { pid: process.pid } }, { write: destination });
  // pino.destination(2) writes synchronously to fd 2, so nothing is lost at exit.
  return pino({ name, level, base: { pid: process.pid } }, pino.destination({ fd: 2, sync: true }));
}
