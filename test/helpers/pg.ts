/** A fresh PostgreSQL database per test file on the server scripts/with-services.sh started. */
import { createHash } from 'node:crypto';
import pg from 'pg';
import { DEFAULT_SCHEMA } from '../../src/store/trackingStore.js';

export function requireEnv(name: string): string {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run this suite through \`npm test\` or \`bash scripts/with-services.sh npx vitest run <file>\``);
  return v;
}

/** A client whose unqualified table names are the store's (its own schema, as every sidecar connection has). */
export function storeClient(url: string): pg.Client {
  return new pg.Client({ connectionString: url, options: `-c search_path=${DEFAULT_SCHEMA}` });
}

/** The store schema of a test's engine or sidecar, named after `key` (its data dir): reopened on the same key, it finds its store again. */
export const testSchemaOf = (key: string): string => `pe_t_${createHash('sha256').update(key).digest('hex').slice(0, 16)}`;

/**
 * The environment of a sidecar whose test is not about the store: the suite's
 * PostgreSQL (TEST_DATABASE_URL) in a schema of `key`'s own, else PGlite. A
 * sidecar opens PostgreSQL in about a second of CPU where a fresh PGlite
 * store costs six to eight (BENCHMARKS.md, the test run): on a 2-core machine
 * that is the test run's time. PGlite itself is tested where it is the
 * subject (store, store-durability, cli, health, nats-deadline's first
 * store open, the Elixir client's tracking and deploy tests).
 */
export function sidecarStoreEnv(key: string): NodeJS.ProcessEnv {
  const url = process.env.TEST_DATABASE_URL;
  return url ? { DATABASE_URL: url, PROMPT_ENGINE_DB_SCHEMA: testSchemaOf(key) } : { DATABASE_URL: '' };
}

/**
 * A database of its own on the server `base` names (a unique name from
 * `prefix`), and how to drop it: one suite's or one bench run's tables never
 * meet another's (the benches use it too).
 */
export async function createDatabase(base: string, prefix: string): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `${prefix}_${process.pid}_${Math.floor(Math.random() * 1e9)}`;
  const admin = new pg.Client({ connectionString: base });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = new URL(base);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async drop() {
      const c = new pg.Client({ connectionString: base });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await c.end();
    },
  };
}

/** A fresh database on the suite's server (TEST_DATABASE_URL), left for the server's end with the run. */
export async function freshDatabase(prefix: string): Promise<string> {
  return (await createDatabase(requireEnv('TEST_DATABASE_URL'), prefix)).url;
}

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/** A PostgreSQL server of this test file's own (initdb in a temp dir), for outage tests that stop it. */
export interface PrivatePostgres {
  url: string;
  stop(): void;
  start(): void;
  destroy(): void;
}

export async function startPrivatePostgres(): Promise<PrivatePostgres> {
  const bin = requireEnv('TEST_PG_BIN');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pe-pg-'));
  fs.chmodSync(dir, 0o755);
  const data = path.join(dir, 'data');
  fs.mkdirSync(data);
  const asRoot = process.getuid?.() === 0;
  if (asRoot) execFileSync('chown', ['postgres:postgres', data, dir]);
  const run = (cmd: string, args: string[]): void => {
    if (asRoot) execFileSync('runuser', ['-u', 'postgres', '--', path.join(bin, cmd), ...args], { stdio: 'ignore' });
    else execFileSync(path.join(bin, cmd), args, { stdio: 'ignore' });
  };
  const port = await freePort();
  run('initdb', ['-D', data, '-A', 'trust', '-U', 'postgres', '--no-sync']);
  fs.appendFileSync(path.join(data, 'postgresql.conf'), `\nlisten_addresses = '127.0.0.1'\nport = ${port}\nunix_socket_directories = '${dir}'\nfsync = off\n`);
  const start = (): void => run('pg_ctl', ['-D', data, '-l', path.join(dir, 'server.log'), '-w', 'start']);
  const stop = (): void => run('pg_ctl', ['-D', data, '-m', 'fast', '-w', 'stop']);
  start();
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    start,
    stop,
    destroy: () => {
      try {
        run('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']);
      } catch {
        /* already stopped */
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
