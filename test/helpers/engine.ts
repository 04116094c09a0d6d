/** An Engine + op table in-process, for suites that test ops without a transport. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig, type EngineConfig } from '../../src/config.js';
import { createEngine, type AppEngine } from '../../src/services.js';
import { createLogger } from '../../src/log.js';
import { createOpTable, type OpResult } from '../../src/ops/index.js';
import type { Term } from '../../src/codec/terms.js';
import { testSchemaOf } from './pg.js';

export interface LocalEngine {
  engine: AppEngine;
  call(op: string, args: Term, signal?: AbortSignal): Promise<OpResult>;
  close(): Promise<void>;
  dataDir: string;
}

/**
 * `postgres: true` puts the store on the suite's PostgreSQL (TEST_DATABASE_URL, when set) in a schema named
 * after the data directory, so an engine reopened on the same directory finds its store again: for suites
 * that open many stores and test the loop, not the backend (a fresh PGlite store costs seconds of initdb).
 */
export function localEngine(overrides: Partial<EngineConfig> = {}, o: { postgres?: boolean } = {}): LocalEngine {
  const dataDir = overrides.dataDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'pe-engine-'));
  const pg = o.postgres === true ? process.env.TEST_DATABASE_URL : undefined;
  const store = pg === undefined ? {} : { databaseUrl: pg, dbSchema: testSchemaOf(dataDir) };
  const engine = createEngine(loadConfig({ ...process.env, DATABASE_URL: '', NATS_URL: '' }, { ...store, ...overrides, dataDir }), createLogger(process.env.TEST_LOG_LEVEL ?? 'silent'));
  const table = createOpTable();
  return {
    engine,
    dataDir,
    call: (op, args, signal = new AbortController().signal) => table.dispatch(op, args, { signal, engine, log: engine.log, transport: 'local' }),
    close: () => engine.close(),
  };
}
