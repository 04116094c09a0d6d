/**
 * Runtime configuration from flags and environment. The one place that
 * reads `process.env` (test/architecture.test.ts fails on a read anywhere
 * else): every setting is read here, once, into `EngineConfig`, and passed
 * down, so every part reads the same names (DATABASE_URL, NATS_URL,
 * LOG_LEVEL, ...; docs/configuration.md lists them all).
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root (works from src/ under tsx/vitest and from dist/src/ once compiled). */
export const REPO_ROOT: string = (() => {
  const here = path.dirname(fileURLToPath(import.meta.url));
  return path.basename(path.dirname(here)) === 'dist' ? path.resolve(here, '..', '..') : path.resolve(here, '..');
})();

export interface EngineConfig {
  /** Where PGlite, the journal and trained models live. */
  dataDir: string;
  /** Set → PostgreSQL through `pg`; unset → embedded PGlite in `dataDir`. */
  databaseUrl?: string;
  /** Set → central_cloud templates over NATS (and NATS peer mode when asked). */
  natsUrl?: string;
  /** The engine's one NATS connection: servers (from natsUrl), auth, TLS, reconnect backoff (NATS_*). */
  nats: NatsSettings;
  /** NATS peer mode: the deadline of a request that names none (PROMPT_ENGINE_NATS_DEADLINE_MS). */
  natsDeadlineMs: number;
  /** NATS peer mode: JetStream's ack wait for a tracking entry being written (PROMPT_ENGINE_TRACK_ACK_WAIT_MS); unset: natsTracking.ts's default. */
  trackAckWaitMs?: number;
  /** How long a central_cloud request may take before the local copy serves (CENTRAL_CLOUD_TIMEOUT_MS). */
  centralCloudTimeoutMs: number;
  templatesDir: string;
  modelsDir: string;
  logLevel: string;
  /** Frames above this many bytes are refused before allocation. */
  maxFrameBytes: number;
  /** Entries in the prompt/result cache. */
  cacheMaxEntries: number;
  /** Estimated bytes in the prompt/result cache (one value at most an eighth of it). */
  cacheMaxBytes: number;
  /** Requests in flight on one Port connection; beyond it `overloaded`. */
  portMaxInFlight: number;
  /** Requests in flight in one NATS peer instance; beyond it `overloaded`. */
  natsMaxInFlight: number;
  /** Prompt embeddings held in memory (PROMPT_ENGINE_EMBEDDING_CACHE; the store keeps every one). */
  embeddingCacheEntries: number;
  /** OpenAI-compatible LLM endpoint for call_llm and the LLM proposer (optional). */
  llmUrl?: string;
  llmModel?: string;
  llmApiKey?: string;
  /** Closed loop: retrain the scorer after this many reported outcomes (0 = only when `train` is called). */
  retrainEvery: number;
  /** Closed loop: continuous retraining replays the shipped corpus and guards on its unseen tasks (PROMPT_ENGINE_RETRAIN_CORPUS, default on). */
  retrainCorpus: boolean;
  /** Closed loop: wait for a proposal batch before serving the next choice (replayable simulations). */
  loopAwaitProposals: boolean;
  /** The PostgreSQL (or PGlite) schema the store's tables live in (PROMPT_ENGINE_DB_SCHEMA). */
  dbSchema: string;
  /** Closed loop: experiments held in memory per sidecar (least recently used dropped past it; the store keeps them). */
  loopMaxExperiments: number;
  /** Closed loop: the most a sidecar's view of shared experiments may lag the store, in ms (PostgreSQL with several sidecars). */
  loopStalenessMs: number;
  /** Closed loop: how often a sidecar that does not decide tries to take the decider's lease, in ms. */
  loopLeaseRetryMs: number;
  /**
   * Closed loop policy overrides (PROMPT_ENGINE_LOOP_POOL_SIZE, ..._BATCH_SIZE, ..._MIN_SAMPLES, ..._REFILL_AFTER, ..._MAX_VARIANTS, ..._PRIOR_STRENGTH);
   * `warmup`, `retireBelow`, `scorerWeight` and `neighbourBandwidth` only in code (bench:loop's nested leave-tasks-out grid).
   */
  loopPolicy: Partial<Record<'poolSize' | 'batchSize' | 'minSamples' | 'refillAfter' | 'maxVariants' | 'priorStrength' | 'warmup' | 'retireBelow' | 'scorerWeight' | 'neighbourBandwidth', number>>;
  /** Serve the dashboard on this address (PROMPT_ENGINE_DASHBOARD: `host:port` or a port on loopback; `--http`). */
  dashboard?: HttpAddress;
  /** The dashboard's operator token (PROMPT_ENGINE_DASHBOARD_TOKEN). A secret: never logged, never in `health` or `stats`. */
  dashboardToken?: string;
}

/** Where an HTTP server listens. */
export interface HttpAddress {
  host: string;
  port: number;
}

/**
 * `host:port`, `[v6]:port` or a bare port (loopback). Port 0 = any free port.
 * Throws naming `what` when the text is none of these.
 */
export function parseHttpAddress(text: string, what: string): HttpAddress {
  const t = text.trim();
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d+)$/.exec(t) ?? /^()()(\d+)$/.exec(t);
  const port = m === null ? NaN : Number(m[3]);
  if (m === null || !Number.isSafeInteger(port) || port < 0 || port > 65_535)
    throw new Error(`${what}: expected host:port, [ipv6]:port or a port (0..65535), got ${JSON.stringify(text)}`);
  return { host: m[1] || m[2] || '127.0.0.1', port };
}

/** NATS connection settings (nats/options.ts turns them into nats.js options). */
export interface NatsSettings {
  /** One or more server URLs (`nats://h1:4222,nats://h2:4222` is split). */
  servers: string[];
  user?: string;
  pass?: string;
  token?: string;
  /** Path to a `.creds` file (JWT + NKEY seed). */
  credsFile?: string;
  /** An NKEY user seed (`SU...`), or a path to a file holding one. */
  nkeySeed?: string;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  name?: string;
  /** Backoff cap between reconnect attempts. */
  reconnectMaxMs?: number;
  /** First reconnect delay; doubles per failed attempt up to `reconnectMaxMs`. */
  reconnectBaseMs?: number;
}

/** Where a setting is unset in the environment, what an entry point wants instead of the sidecar's default (the CLI logs at warn). */
export interface ConfigDefaults {
  logLevel?: string;
  /** Serve the dashboard here (`host:port`) unless told otherwise (`prompt-engine dashboard`). */
  dashboard?: string;
}

/** The process's environment with some variables replaced (an entry point that must ignore DATABASE_URL, say); pass it to `loadConfig`. */
export function envWith(changes: Readonly<Record<string, string>>): NodeJS.ProcessEnv {
  return { ...process.env, ...changes };
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env, overrides: Partial<EngineConfig> = {}, defaults: ConfigDefaults = {}): EngineConfig {
  const natsUrl = overrides.natsUrl ?? (env.NATS_URL || undefined);
  const base: EngineConfig = {
    dataDir: path.resolve(env.PROMPT_ENGINE_DATA_DIR ?? path.join(REPO_ROOT, '.data')),
    databaseUrl: env.DATABASE_URL || undefined,
    natsUrl,
    nats: natsSettingsFromEnv(env, { servers: splitServers(natsUrl) }),
    natsDeadlineMs: positiveInt(env.PROMPT_ENGINE_NATS_DEADLINE_MS, 5_000),
    trackAckWaitMs: env.PROMPT_ENGINE_TRACK_ACK_WAIT_MS ? positiveInt(env.PROMPT_ENGINE_TRACK_ACK_WAIT_MS, 1) : undefined,
    centralCloudTimeoutMs: positiveInt(env.CENTRAL_CLOUD_TIMEOUT_MS, 500),
    templatesDir: path.resolve(env.PROMPT_ENGINE_TEMPLATES_DIR ?? path.join(REPO_ROOT, 'templates_data')),
    modelsDir: path.resolve(env.PROMPT_ENGINE_MODELS_DIR ?? path.join(REPO_ROOT, 'models')),
    logLevel: env.LOG_LEVEL || defaults.logLevel || 'info',
    maxFrameBytes: positiveInt(env.PROMPT_ENGINE_MAX_FRAME_BYTES, 64 * 1024 * 1024),
    cacheMaxEntries: positiveInt(env.PROMPT_ENGINE_CACHE_ENTRIES, 10_000),
    cacheMaxBytes: positiveInt(env.PROMPT_ENGINE_CACHE_BYTES, 64 * 1024 * 1024),
    // At least the Elixir client's own max_in_flight default (10,000), so the client refuses first.
    portMaxInFlight: positiveInt(env.PROMPT_ENGINE_PORT_MAX_IN_FLIGHT, 10_000),
    natsMaxInFlight: positiveInt(env.PROMPT_ENGINE_NATS_MAX_IN_FLIGHT, 4_096),
    embeddingCacheEntries: positiveInt(env.PROMPT_ENGINE_EMBEDDING_CACHE, 20_000),
    llmUrl: env.LLM_URL || undefined,
    llmModel: env.LLM_MODEL || undefined,
    llmApiKey: env.LLM_API_KEY || undefined,
    retrainEvery: nonNegativeInt(env.PROMPT_ENGINE_RETRAIN_EVERY, 5_000),
    retrainCorpus: env.PROMPT_ENGINE_RETRAIN_CORPUS !== '0' && env.PROMPT_ENGINE_RETRAIN_CORPUS !== 'false',
    loopAwaitProposals: env.PROMPT_ENGINE_LOOP_AWAIT_PROPOSALS === '1' || env.PROMPT_ENGINE_LOOP_AWAIT_PROPOSALS === 'true',
    loopPolicy: loopPolicyFrom(env),
    dbSchema: schemaName(env.PROMPT_ENGINE_DB_SCHEMA),
    loopMaxExperiments: positiveInt(env.PROMPT_ENGINE_LOOP_MAX_EXPERIMENTS, 10_000),
    loopStalenessMs: positiveInt(env.PROMPT_ENGINE_LOOP_STALENESS_MS, 1_000),
    loopLeaseRetryMs: positiveInt(env.PROMPT_ENGINE_LOOP_LEASE_RETRY_MS, 1_000),
    dashboard: env.PROMPT_ENGINE_DASHBOARD ? parseHttpAddress(env.PROMPT_ENGINE_DASHBOARD, 'PROMPT_ENGINE_DASHBOARD') : defaults.dashboard === undefined ? undefined : parseHttpAddress(defaults.dashboard, 'the default dashboard address'),
    dashboardToken: env.PROMPT_ENGINE_DASHBOARD_TOKEN || undefined,
  };
  return { ...base, ...stripUndefined(overrides) };
}

/** A schema name: a lower-case SQL identifier, so it is never quoted (default `prompt_engine`). */
function schemaName(v: string | undefined): string {
  if (v === undefined || v === '') return 'prompt_engine';
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(v)) throw new Error(`PROMPT_ENGINE_DB_SCHEMA: expected a lower-case SQL identifier (letters, digits, _), got ${JSON.stringify(v)}`);
  return v;
}

export function splitServers(v: string | undefined): string[] {
  return (v ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

const nonEmpty = (v: string | undefined): string | undefined => (v === undefined || v.trim() === '' ? undefined : v.trim());

/**
 * NATS settings from the environment (NATS_URL, a comma-separated list;
 * NATS_USER, NATS_PASSWORD, NATS_TOKEN, NATS_CREDS, NATS_NKEY_SEED,
 * NATS_TLS_CA, NATS_TLS_CERT, NATS_TLS_KEY, NATS_NAME, NATS_RECONNECT_MAX_MS),
 * with explicit values (flags) taking precedence.
 */
export function natsSettingsFromEnv(env: NodeJS.ProcessEnv = process.env, overrides: Partial<NatsSettings> = {}): NatsSettings {
  const s: NatsSettings = {
    servers: splitServers(env.NATS_URL),
    user: nonEmpty(env.NATS_USER),
    pass: nonEmpty(env.NATS_PASSWORD),
    token: nonEmpty(env.NATS_TOKEN),
    credsFile: nonEmpty(env.NATS_CREDS),
    nkeySeed: nonEmpty(env.NATS_NKEY_SEED),
    tlsCa: nonEmpty(env.NATS_TLS_CA),
    tlsCert: nonEmpty(env.NATS_TLS_CERT),
    tlsKey: nonEmpty(env.NATS_TLS_KEY),
    name: nonEmpty(env.NATS_NAME),
    reconnectMaxMs: env.NATS_RECONNECT_MAX_MS ? positiveInt(env.NATS_RECONNECT_MAX_MS, 1) : undefined,
  };
  for (const [k, v] of Object.entries(overrides)) if (v !== undefined) (s as unknown as Record<string, unknown>)[k] = v;
  return s;
}

function positiveInt(v: string | undefined, dflt: number): number {
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n <= 0) throw new Error(`expected a positive integer, got ${JSON.stringify(v)}`);
  return n;
}

function nonNegativeInt(v: string | undefined, dflt: number): number {
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`expected a non-negative integer, got ${JSON.stringify(v)}`);
  return n;
}

function loopPolicyFrom(env: NodeJS.ProcessEnv): EngineConfig['loopPolicy'] {
  const out: EngineConfig['loopPolicy'] = {};
  const names = { poolSize: 'POOL_SIZE', batchSize: 'BATCH_SIZE', minSamples: 'MIN_SAMPLES', refillAfter: 'REFILL_AFTER', maxVariants: 'MAX_VARIANTS' } as const;
  for (const [k, suffix] of Object.entries(names) as Array<[keyof typeof names, string]>) {
    const v = env[`PROMPT_ENGINE_LOOP_${suffix}`];
    if (v !== undefined && v !== '') out[k] = positiveInt(v, 1);
  }
  const s = env.PROMPT_ENGINE_LOOP_PRIOR_STRENGTH;
  if (s !== undefined && s !== '') {
    const n = Number(s);
    if (!Number.isFinite(n) || n < 0) throw new Error(`PROMPT_ENGINE_LOOP_PRIOR_STRENGTH: expected a non-negative number, got ${JSON.stringify(s)}`);
    out.priorStrength = n;
  }
  return out;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** Configuration from command-line flags over the environment (`--data-dir`, `--database-url`, `--nats`, `--log-level`, `--max-frame-bytes`). */
export function configFromFlags(flags: ReadonlyMap<string, string | true>, env: NodeJS.ProcessEnv = process.env, defaults: ConfigDefaults = {}): EngineConfig {
  const str = (k: string): string | undefined => {
    const v = flags.get(k);
    return typeof v === 'string' ? v : undefined;
  };
  const maxFrame = str('max-frame-bytes');
  return loadConfig(env, {
    dataDir: str('data-dir') === undefined ? undefined : path.resolve(str('data-dir')!),
    databaseUrl: str('database-url'),
    natsUrl: str('nats'),
    logLevel: str('log-level'),
    maxFrameBytes: maxFrame === undefined ? undefined : positiveInt(maxFrame, 0),
    dashboard: str('http') === undefined ? undefined : parseHttpAddress(str('http')!, '--http'),
  }, defaults);
}
