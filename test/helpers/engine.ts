/** An Engine + op table in-process, for suites that test ops without a transport. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig, type EngineConfig } from '../../src/config.js';
import { createEngine, type AppEngine } from '../../src/services.js';
import { createLogger } from '../../src/log.js';
import { createOpTable, type OpResult } from '../../src/ops/index.js';
import type { Term } from '../../src/codec/terms.js';

export interface LocalEngine {
  engine: AppEngine;
  call(op: string, args: Term, signal?: AbortSignal): Promise<OpResult>;
  close(): Promise<void>;
  dataDir: string;
}

export function localEngine(overrides: Partial<EngineConfig> = {}): LocalEngine {
  const dataDir = overrides.dataDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'pe-engine-'));
  const engine = createEngine(loadConfig({ ...process.env, DATABASE_URL: '', NATS_URL: '' }, { ...overrides, dataDir }), createLogger(process.env.TEST_LOG_LEVEL ?? 'silent'));
  const table = createOpTable();
  return {
    engine,
    dataDir,
    call: (op, args, signal = new AbortController().signal) => table.dispatch(op, args, { signal, engine, log: engine.log, transport: 'local' }),
    close: () => engine.close(),
  };
}
