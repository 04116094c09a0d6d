/**
 * Parent watchdog: a worker thread that notices when the process that
 * spawned us (the BEAM's erl_child_setup) is gone, even if the main event
 * loop is busy and never sees input EOF. It asks the main thread to stop
 * (nobody is left to receive a reply: no drain, just flush tracking writes
 * to the store or the journal); if the process is still alive `graceMs`
 * later, it SIGKILLs it. Parent gone → process gone within ~200 ms, busy or
 * not. No orphan Node process, ever. (A graceful close by a live owner is
 * input EOF with the same parent: that keeps its drain.)
 */
import { Worker } from 'node:worker_threads';

const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { originalPpid, intervalMs, graceMs } = workerData;
let notified = false;
setInterval(() => {
  if (process.ppid === originalPpid) return;
  if (!notified) {
    notified = true;
    parentPort.postMessage('parent-gone');
    setTimeout(() => process.kill(process.pid, 'SIGKILL'), graceMs);
  }
}, intervalMs);
`;

export interface Watchdog {
  stop(): Promise<void>;
}

export function startParentWatchdog(onParentGone: () => void, opts: { intervalMs?: number; graceMs?: number } = {}): Watchdog | undefined {
  const originalPpid = process.ppid;
  if (originalPpid <= 1) return undefined; // already orphaned or started by init: nothing to watch
  const worker = new Worker(WORKER_SOURCE, {
    eval: true,
    workerData: { originalPpid, intervalMs: opts.intervalMs ?? 50, graceMs: opts.graceMs ?? 150 },
  });
  worker.on('message', (m) => {
    if (m === 'parent-gone') onParentGone();
  });
  worker.on('error', () => undefined);
  worker.unref();
  return { stop: async () => void (await worker.terminate()) };
}
