/**
 * Runtime configuration from flags and environment. One place, so every
 * part reads the same names (DATABASE_URL, NATS_URL, LOG_LEVEL, ...).
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
  templatesDir: string;
  modelsDir: string;
  logLevel: string;
  /** Frames above this many bytes are refused before allocation. */
  maxFrameBytes: number;
  /** Entries in the prompt/result cache. */
  cacheMaxEntries: number;
  /** OpenAI-compatible LLM endpoint for call_llm and the LLM proposer (optional). */
  llmUrl?: string;
  llmModel?: string;
  llmApiKey?: string;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env, overrides: Partial<EngineConfig> = {}): EngineConfig {
  const base: EngineConfig = {
    dataDir: path.resolve(env.PROMPT_ENGINE_DATA_DIR ?? path.join(REPO_ROOT, '.data')),
    databaseUrl: env.DATABASE_URL || undefined,
    natsUrl: env.NATS_URL || undefined,
    templatesDir: path.resolve(env.PROMPT_ENGINE_TEMPLATES_DIR ?? path.join(REPO_ROOT, 'templates_data')),
    modelsDir: path.resolve(env.PROMPT_ENGINE_MODELS_DIR ?? path.join(REPO_ROOT, 'models')),
    logLevel: env.LOG_LEVEL ?? 'info',
    maxFrameBytes: positiveInt(env.PROMPT_ENGINE_MAX_FRAME_BYTES, 64 * 1024 * 1024),
    cacheMaxEntries: positiveInt(env.PROMPT_ENGINE_CACHE_ENTRIES, 10_000),
    llmUrl: env.LLM_URL || undefined,
    llmModel: env.LLM_MODEL || undefined,
    llmApiKey: env.LLM_API_KEY || undefined,
  };
  return { ...base, ...stripUndefined(overrides) };
}

function positiveInt(v: string | undefined, dflt: number): number {
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n <= 0) throw new Error(`expected a positive integer, got ${JSON.stringify(v)}`);
  return n;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** Configuration from command-line flags over the environment (`--data-dir`, `--database-url`, `--nats`, `--log-level`, `--max-frame-bytes`). */
export function configFromFlags(flags: ReadonlyMap<string, string | true>, env: NodeJS.ProcessEnv = process.env): EngineConfig {
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
  });
}
