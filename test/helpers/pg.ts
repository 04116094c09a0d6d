/** A fresh PostgreSQL database per test file on the server scripts/with-services.sh started. */
import pg from 'pg';

export function requireEnv(name: string): string {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run this suite through \`npm test\` or \`bash scripts/with-services.sh npx vitest run <file>\``);
  return v;
}

export async function freshDatabase(prefix: string): Promise<string> {
  const base = requireEnv('TEST_DATABASE_URL');
  const name = `${prefix}_${process.pid}_${Math.floor(Math.random() * 1e6)}`;
  const c = new pg.Client({ connectionString: base });
  await c.connect();
  await c.query(`CREATE DATABASE ${name}`);
  await c.end();
  const url = new URL(base);
  url.pathname = `/${name}`;
  return url.toString();
}
