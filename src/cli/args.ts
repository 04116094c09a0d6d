/**
 * The command line's grammar: each verb declares its positionals and flags,
 * `parseVerbArgs` reads argv against that declaration (an undeclared flag
 * is a `UsageError`, exit 2, never ignored), and `verbHelp` prints the same
 * declaration as `--help`. No dependency: the grammar is small and the
 * errors should name our flags.
 */

export type FlagType = 'bool' | 'string' | 'int' | 'number' | 'list';

export interface FlagSpec {
  readonly name: string;
  readonly type: FlagType;
  readonly doc: string;
  /** Placeholder in help: `--breadth N`. */
  readonly value?: string;
}

export interface PositionalSpec {
  readonly name: string;
  readonly doc: string;
  readonly required?: boolean;
  /** Takes every remaining positional. */
  readonly variadic?: boolean;
}

export interface VerbGrammar {
  readonly name: string;
  readonly summary: string;
  readonly positionals: readonly PositionalSpec[];
  readonly flags: readonly FlagSpec[];
  /** Lines of examples for --help. */
  readonly examples?: readonly string[];
}

export type FlagValue = string | number | boolean | string[];

export interface ParsedArgs {
  readonly positionals: string[];
  readonly flags: ReadonlyMap<string, FlagValue>;
  readonly help: boolean;
}

/** A mistake on the command line: printed with the verb's usage line, exit status 2. */
export class UsageError extends Error {
  constructor(
    message: string,
    readonly verb?: string,
  ) {
    super(message);
    this.name = 'UsageError';
  }
}

export function parseVerbArgs(grammar: VerbGrammar, argv: readonly string[]): ParsedArgs {
  const byName = new Map(grammar.flags.map((f) => [f.name, f]));
  const flags = new Map<string, FlagValue>();
  const positionals: string[] = [];
  let help = false;
  let onlyPositionals = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (onlyPositionals || a === '-' || !a.startsWith('-')) {
      positionals.push(a);
      continue;
    }
    if (a === '--') {
      onlyPositionals = true;
      continue;
    }
    if (a === '-h' || a === '--help') {
      help = true;
      continue;
    }
    if (!a.startsWith('--')) throw new UsageError(`unknown flag ${a} (flags are long: --name)`, grammar.name);
    const eq = a.indexOf('=');
    const name = a.slice(2, eq > 0 ? eq : undefined);
    const spec = byName.get(name);
    if (spec === undefined) {
      const known = grammar.flags.map((f) => `--${f.name}`).join(', ');
      throw new UsageError(`unknown flag --${name}; ${grammar.name} takes ${known === '' ? 'no flags' : known} (and --help)`, grammar.name);
    }
    if (spec.type === 'bool') {
      if (eq > 0) throw new UsageError(`--${name} takes no value`, grammar.name);
      flags.set(name, true);
      continue;
    }
    let raw: string;
    if (eq > 0) raw = a.slice(eq + 1);
    else {
      const next = argv[i + 1];
      if (next === undefined || (next.startsWith('--') && next.length > 2)) throw new UsageError(`--${name} needs a value (${spec.value ?? spec.type})`, grammar.name);
      raw = next;
      i++;
    }
    flags.set(name, flagValue(spec, raw, flags.get(name)));
  }
  if (!help) checkPositionals(grammar, positionals);
  return { positionals, flags, help };
}

function flagValue(spec: FlagSpec, raw: string, previous: FlagValue | undefined): FlagValue {
  switch (spec.type) {
    case 'int': {
      const n = Number(raw);
      if (raw.trim() === '' || !Number.isSafeInteger(n)) throw new UsageError(`--${spec.name}: expected an integer, got ${JSON.stringify(raw)}`);
      return n;
    }
    case 'number': {
      const n = Number(raw);
      if (raw.trim() === '' || !Number.isFinite(n)) throw new UsageError(`--${spec.name}: expected a number, got ${JSON.stringify(raw)}`);
      return n;
    }
    case 'list':
      return [...((previous as string[] | undefined) ?? []), raw];
    default:
      return raw;
  }
}

function checkPositionals(g: VerbGrammar, got: string[]): void {
  const required = g.positionals.filter((p) => p.required).length;
  const variadic = g.positionals.some((p) => p.variadic);
  if (got.length < required) throw new UsageError(`missing <${g.positionals[got.length]!.name}>`, g.name);
  if (!variadic && got.length > g.positionals.length)
    throw new UsageError(`unexpected argument ${JSON.stringify(got[g.positionals.length])}${g.positionals.length === 0 ? ` (${g.name} takes none)` : ''}`, g.name);
}

export function usageLine(g: VerbGrammar): string {
  const pos = g.positionals.map((p) => {
    const n = `<${p.name}>${p.variadic ? '...' : ''}`;
    return p.required ? n : `[${n}]`;
  });
  return ['prompt-engine', g.name, ...pos, g.flags.length > 0 ? '[flags]' : ''].filter((s) => s !== '').join(' ');
}

export function verbHelp(g: VerbGrammar): string {
  const lines = [`usage: ${usageLine(g)}`, '', g.summary, ''];
  if (g.positionals.length > 0) {
    lines.push('arguments:');
    const w = Math.max(...g.positionals.map((p) => p.name.length + 2));
    for (const p of g.positionals) lines.push(`  ${`<${p.name}>`.padEnd(w)}  ${p.doc}${p.required ? '' : ' (optional)'}`);
    lines.push('');
  }
  const all: FlagSpec[] = [...g.flags, { name: 'help', type: 'bool', doc: 'this help' }];
  lines.push('flags:');
  const label = (f: FlagSpec): string => `--${f.name}${f.type === 'bool' ? '' : ` ${f.value ?? f.type.toUpperCase()}`}`;
  const w = Math.max(...all.map((f) => label(f).length));
  for (const f of all) lines.push(`  ${label(f).padEnd(w)}  ${f.doc}${f.type === 'list' ? ' (repeatable)' : ''}`);
  if (g.examples !== undefined && g.examples.length > 0) lines.push('', 'examples:', ...g.examples.map((e) => `  ${e}`));
  return `${lines.join('\n')}\n`;
}

/** `k=v` pairs (from repeated flags) as a map. */
export function pairs(values: FlagValue | undefined, flag: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const kv of (values as string[] | undefined) ?? []) {
    const eq = kv.indexOf('=');
    if (eq <= 0) throw new UsageError(`--${flag}: expected key=value, got ${JSON.stringify(kv)}`);
    out[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  return out;
}
