/**
 * The `prompt-engine` command as a user runs it: the built CLI
 * (dist/src/cli.js) spawned against a temp data dir (PGlite) and the test
 * PostgreSQL, checking its output and exit status. The Port's refusal of a
 * terminal is checked under a real pseudo-terminal (`script`).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fromJson } from '../src/codec/json.js';
import { REPO_ROOT } from '../src/config.js';
import { portRefusal } from '../src/cli.js';
import { freshDatabase } from './helpers/pg.js';
import { localEngine } from './helpers/engine.js';

const CLI = path.join(REPO_ROOT, 'dist', 'src', 'cli.js');
const dirs: string[] = [];
const tmpDir = (): string => {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'pe-cli-'));
  dirs.push(d);
  return d;
};
afterAll(() => dirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function cli(args: string[], opts: { env?: NodeJS.ProcessEnv; input?: string } = {}): Run {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    encoding: 'utf8',
    input: opts.input ?? '',
    timeout: 60_000,
    env: { ...process.env, DATABASE_URL: '', NATS_URL: '', LOG_LEVEL: '', ...opts.env },
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const VERBS = ['port', 'serve', 'dashboard', 'call', 'health', 'render', 'optimize', 'choose', 'train', 'stats', 'query', 'experiments', 'ops'];

describe('grammar', () => {
  it('--help lists every command', () => {
    const r = cli(['--help']);
    expect(r.code).toBe(0);
    for (const v of VERBS) expect(r.stdout).toMatch(new RegExp(`^  ${v} `, 'm'));
  });

  it('--help on every command lists its flags, including --help', () => {
    for (const v of VERBS) {
      const r = cli([v, '--help']);
      expect(r.code, v).toBe(0);
      expect(r.stdout, v).toMatch(new RegExp(`^usage: prompt-engine ${v}`));
      expect(r.stdout, v).toMatch(/^ {2}--help +this help$/m);
    }
    expect(cli(['optimize', '--help']).stdout).toMatch(/^ {2}--breadth N +candidates proposed per round \(integer 1\.\.50; default \d+\)$/m); // from the op's spec
    expect(cli(['train', '-h']).stdout).toMatch(/^ {2}--epochs N /m);
  });

  it('an unknown flag is refused with exit 2, naming it and the known ones', () => {
    const r = cli(['optimize', 'x', '--bredth', '4']);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^prompt-engine optimize: unknown flag --bredth; optimize takes --breadth, --depth, /);
    expect(r.stderr).toContain('usage: prompt-engine optimize <prompt> [flags]');
  });

  it('usage mistakes exit 2: unknown command, missing argument, a bad number, too many arguments', () => {
    expect(cli(['optimise']).code).toBe(2);
    expect(cli(['optimise']).stderr).toMatch(/unknown command "optimise"/);
    expect(cli(['render']).stderr).toMatch(/^prompt-engine render: missing <template>/);
    expect(cli(['optimize', 'x', '--breadth', 'four'])).toMatchObject({ code: 2, stderr: expect.stringMatching(/--breadth: expected an integer, got "four"/) });
    expect(cli(['health', 'extra'])).toMatchObject({ code: 2, stderr: expect.stringMatching(/unexpected argument "extra" \(health takes none\)/) });
    expect(cli(['call', 'echo', '{not json'])).toMatchObject({ code: 2, stderr: expect.stringMatching(/json: not JSON/) });
  });
});

describe('port on a terminal', () => {
  it('refuses a terminal under a real pty, exit 2 (no frame is written to it)', () => {
    const r = spawnSync('script', ['-qec', `${process.execPath} ${CLI} port`, '/dev/null'], { encoding: 'utf8', timeout: 20_000 });
    expect(r.status).toBe(2);
    expect(r.stdout).toMatch(/prompt-engine port: refusing to run on a terminal \(fd 0 and 1\)/);
    // With no verb at all (what a user types first) it is the Port too, and refused the same way.
    const bare = spawnSync('script', ['-qec', `${process.execPath} ${CLI}`, '/dev/null'], { encoding: 'utf8', timeout: 20_000 });
    expect(bare.status).toBe(2);
    expect(bare.stdout).toMatch(/refusing to run on a terminal/);
  });

  it('checks the fds the frames use: 0/1, or 3/4 with --port-fds', () => {
    const open = (): boolean => true;
    expect(portRefusal(0, 1, (fd) => fd === 0, open)).toMatch(/\(fd 0\)/);
    expect(portRefusal(3, 4, (fd) => fd === 0 || fd === 1, open)).toBeUndefined();
    expect(portRefusal(3, 4, (fd) => fd === 4, open)).toMatch(/\(fd 4\)/);
    expect(portRefusal(3, 4, () => false, (fd) => fd !== 4)).toMatch(/^fd 4 not open to this process: `port --port-fds` reads frames from fd 3/);
    // The real thing: spawned with only stdin/stdout/stderr, `--port-fds` has nothing to read or write.
    const r = spawnSync(process.execPath, [CLI, 'port', '--port-fds'], { encoding: 'utf8', timeout: 20_000, stdio: ['pipe', 'pipe', 'pipe'] });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/fd 3( and 4)? not open to this process/);
  });
});

describe('engine verbs on PGlite', () => {
  const dataDir = tmpDir();
  const on = (...args: string[]): Run => cli([...args, '--data-dir', dataDir]);

  it('call health --json prints the health reply as JSON', () => {
    const r = on('call', 'health', '--json');
    expect(r.code).toBe(0);
    const h = JSON.parse(r.stdout) as { status: string; checks: { database: { status: string } } };
    expect(h.status).toBe('ok');
    expect(h.checks.database.status).toBe('not_started');
  });

  it('call reaches any op; its errors exit 1 with reason and message (JSON too with --json)', () => {
    const echo = on('call', 'echo', '{"a": [1, 2.5, "x"]}', '--json');
    expect(JSON.parse(echo.stdout)).toEqual({ a: [1, 2.5, 'x'] });
    const typo = on('call', 'optimize_prompt', '{"prompt": "x", "bredth": 3}');
    expect(typo.code).toBe(1);
    expect(typo.stderr).toMatch(/^prompt-engine call: bad_request: bredth: unknown argument of optimize_prompt \(did you mean breadth\?\)/m);
    const json = on('call', 'nope', '--json');
    expect(json.code).toBe(1);
    expect(JSON.parse(json.stdout)).toMatchObject({ error: { reason: 'unknown_op' } });
    expect(cli(['call', 'echo', '-', '--json'], { input: '{"from": "stdin"}' }).stdout).toContain('"from": "stdin"');
  });

  it('render prints the fields, then the prompt; --json the reply', () => {
    const r = on('render', 'sparc_specification', '--var', 'language=elixir', '--var', 'domain=payments', '--var', 'context=a rate limiter');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^template_used +sparc_specification$/m);
    expect(r.stdout).toContain('SPECIFICATION phase');
    expect(r.stdout).toContain('a payments system');
    // A typo is refused naming it (and what it probably meant); --no-strict renders anyway.
    const typo = on('render', 'sparc_specification', '--var', 'language=elixir', '--var', 'domain=payments', '--var', 'contxt=a rate limiter');
    expect(typo).toMatchObject({ code: 1, stderr: expect.stringMatching(/bad_request: variables: missing context; contxt is not a variable of sparc_specification \(did you mean context\?/) });
    const j = JSON.parse(on('render', 'sparc_specification', '--no-strict', '--json').stdout) as { prompt: string };
    expect(j.prompt).toContain('SPECIFICATION phase');
    expect(on('render', 'no_such_template')).toMatchObject({ code: 1, stderr: expect.stringMatching(/not_found: no template named "no_such_template"/) });
  });

  it('optimize prints the score, the candidates and the optimized prompt', () => {
    const r = on('optimize', 'Write a function that parses the input.', '--breadth', '3', '--depth', '0', '--language', 'elixir');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^score +\d\.\d{3}$/m);
    expect(r.stdout).toMatch(/^round +score +prompt$/m);
    expect(r.stdout).toMatch(/optimized prompt:\n\S/);
  }, 60_000);

  it('ops lists every op; ops <op> its arguments; ops --markdown is docs/ops.md', () => {
    const all = cli(['ops']);
    expect(all.stdout).toMatch(/^optimize_prompt +prompt breadth\? /m);
    expect(cli(['ops', 'optimize_prompt']).stdout).toMatch(/^breadth +integer 1\.\.50 +no +\d+ +candidates proposed per round/m);
    expect(cli(['ops', 'nope'])).toMatchObject({ code: 1, stderr: expect.stringMatching(/not_found: no op named "nope"; known: /) });
    expect(cli(['ops', '--markdown']).stdout).toBe(fs.readFileSync(path.join(REPO_ROOT, 'docs', 'ops.md'), 'utf8'));
  });
});

// The closed loop's verbs open the store several times in a row: on PostgreSQL (each PGlite open of the
// directory costs seconds; PGlite itself is exercised by the verbs above).
describe('the closed loop from the CLI, on PostgreSQL', () => {
  let url = '';
  beforeAll(async () => {
    url = await freshDatabase('pe_cli_loop');
  });
  const on = (...args: string[]): Run => cli(args, { env: { DATABASE_URL: url } });

  it('choose, then experiments shows the closed loop as a table', () => {
    const c = on('choose', 'cli_triage', 'Classify the ticket by urgency.', '--model', 'm1', '--json');
    expect(c.code).toBe(0);
    // The command returns while the new experiment's first batch is screened: the engine closing under it is no warning.
    expect(c.stderr).toBe('');
    const choice = JSON.parse(c.stdout) as { prompt_id: string; metadata: Record<string, string> };
    expect(choice.metadata).toMatchObject({ experiment: 'cli_triage', model: 'm1' });
    const list = on('experiments');
    expect(list.code).toBe(0);
    expect(list.stdout).toMatch(/^experiment +model +status +gen +objective +outcomes +leader/m);
    expect(list.stdout).toMatch(/^cli_triage +m1 +running +\d+ +success /m);
    const one = on('experiments', 'cli_triage');
    expect(one.stdout).toMatch(/^cli_triage \(m1\): running, generation \d+, objective success, 0 outcomes/m);
    expect(one.stdout).toMatch(/^prompt_id +origin +state +count +success +P\(best\) +text/m);
    expect(one.stdout).toContain(choice.prompt_id);
    // no outcome yet: nothing measured, not 0%
    expect(one.stdout).toMatch(new RegExp(`^${choice.prompt_id} +base +active +0 +— `, 'm'));
    expect(on('experiments', 'nope')).toMatchObject({ code: 1, stderr: expect.stringMatching(/not_found: no experiment named "nope"/) });
  });

  it('choose --objective sets a reward objective that experiments shows with each measured component; a wrong key is named', () => {
    const c = on('choose', 'cli_costly', 'Answer the customer.', '--objective', 'kind=reward', '--objective', 'cost_weight=1', '--objective', 'input_token_cost=0.001', '--json');
    expect(c.code).toBe(0);
    const one = on('experiments', 'cli_costly');
    expect(one.code).toBe(0);
    expect(one.stdout).toMatch(/^cli_costly \(default\): running, generation \d+, objective reward \(cost_weight 1, input_token_cost 0\.001\), 0 outcomes/m);
    expect(one.stdout).toMatch(/^prompt_id +origin +state +count +success +value +score +cost +latency ms +P\(best\) +text/m);
    expect(on('choose', 'cli_costly2', 'Answer.', '--objective', 'kind=reward', '--objective', 'cost_wieght=1')).toMatchObject({
      code: 1,
      stderr: expect.stringMatching(/bad_request: objective\.cost_wieght: unknown argument .*did you mean objective\.cost_weight/),
    });
  });
});

describe('train', () => {
  it('with too little history: exit 1, insufficient_data, saying what counts', () => {
    const r = cli(['train', '--data-dir', tmpDir()]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/prompt-engine train: insufficient_data: need at least 50 executions with prompt text \(metadata\.prompt\), have 0/);
  }, 60_000);

  it('on a tracked history: epochs on stderr, the result as a table', async () => {
    // On PostgreSQL: the history is written, then the store opened twice more (each PGlite open costs seconds).
    const url = await freshDatabase('pe_cli_train');
    const eng = localEngine({ databaseUrl: url });
    for (let i = 0; i < 120; i++) {
      const prompt = `Answer the question carefully, variant ${i % 12}.${i % 3 === 0 ? ' Think step by step.' : ''}`;
      const r = await eng.call('track_execution', fromJson({ prompt_id: `cli-${i % 12}`, success: i % 3 === 0 || i % 5 === 0, execution_time_ms: 10, metadata: { prompt, model: 'm1', task: 'qa' } }));
      expect(r.ok).toBe(true);
    }
    await eng.close();
    const r = cli(['train', '--min-samples', '20', '--epochs', '3'], { env: { DATABASE_URL: url } });
    expect(r.code, r.stderr).toBe(0);
    // Not a terminal here: one line per epoch instead of a redrawn bar; the trainer's epoch records are not printed as well.
    expect(r.stderr).toMatch(/^train: epoch 1\/3, held-out loss \d\.\d{4}$/m);
    expect(r.stderr).not.toMatch(/^\[train\] epoch|"msg":"training epoch"/m);
    expect(r.stdout).toMatch(/^promoted +(yes|no)$/m);
    // Each column of metrics names its model: the new one, and the one that served before.
    const version = /^model_version +(\S+)$/m.exec(r.stdout)?.[1];
    const previous = /^previous_version +(\S+)$/m.exec(r.stdout)?.[1];
    expect(version).toBeDefined();
    expect(previous).toBeDefined();
    expect(version).not.toBe(previous);
    expect(r.stdout).toMatch(new RegExp(`^metric +new: ${version} +previous: ${previous}$`, 'm'));
    expect(r.stdout).toMatch(/^auc +\d/m);
    const j = JSON.parse(cli(['train', '--min-samples', '20', '--epochs', '2', '--json'], { env: { DATABASE_URL: url } }).stdout) as { model_version: string; previous_version: string; serving_version: string; promoted: boolean };
    expect(j.previous_version).toBe(/^promoted +yes$/m.test(r.stdout) ? version : previous);
    expect(j.serving_version).toBe(j.promoted ? j.model_version : j.previous_version);
  }, 120_000);
});

describe('engine verbs on PostgreSQL', () => {
  it('query and stats read what call wrote', async () => {
    const url = await freshDatabase('pe_cli');
    const env = { DATABASE_URL: url };
    for (let i = 0; i < 4; i++) expect(cli(['call', 'track_execution', JSON.stringify({ prompt_id: 'cli-pg', success: i < 3, execution_time_ms: 100 + i })], { env }).code).toBe(0);
    const q = cli(['query', 'prompt_executions', '--prompt-id', 'cli-pg', '--limit', '2'], { env });
    expect(q.code, q.stderr).toBe(0);
    expect(q.stdout.trim().split('\n')).toHaveLength(4); // header, rule, 2 rows
    expect(q.stdout).toMatch(/^id +prompt_id +execution_time_ms +success/m);
    const s = cli(['stats', 'cli-pg', 'unseen'], { env });
    expect(s.stdout).toMatch(/^cli-pg +4 +3 +75\.0%/m);
    expect(s.stdout).toMatch(/^unseen +0 +0 +0\.0%/m);
    // Without ids: the store's figures (what is tracked), not the command's own process counters.
    const figures = JSON.parse(cli(['stats', '--json'], { env }).stdout) as { store: Record<string, unknown>; prompts: Array<Record<string, unknown>> };
    expect(figures.store).toMatchObject({ backend: 'postgres', prompts: 1, executions: 4, successes: 3, success_rate: 0.75, journal_depth: 0 });
    expect(figures.prompts).toEqual([expect.objectContaining({ prompt_id: 'cli-pg', count: 4 })]);
    expect(cli(['stats'], { env }).stdout).toMatch(/^executions +4$/m);
  }, 60_000);

  it('a read verb refuses a data directory that does not exist, and creates nothing there', () => {
    const missing = path.join(tmpDir(), 'typo');
    for (const verb of [['stats'], ['stats', 'p-1'], ['query', 'high_performance'], ['experiments'], ['train']]) {
      const r = cli([...verb, '--data-dir', missing]);
      expect(r.code, verb.join(' ')).toBe(2);
      expect(r.stderr).toContain(`the data directory ${missing} does not exist, so nothing is tracked there`);
    }
    expect(fs.existsSync(missing)).toBe(false);
  });

  it('health on an unreachable database: degraded with the reason; a read exits 1 with unavailable', () => {
    const env = { DATABASE_URL: 'postgres://postgres@127.0.0.1:9/none' };
    const degraded = cli(['health', '--json'], { env });
    expect(degraded.code).toBe(1); // a health check that is not ok fails, like pg_isready
    const h = JSON.parse(degraded.stdout) as { status: string; reasons: string[] };
    expect(h.status).toBe('degraded');
    expect(h.reasons[0]).toMatch(/^database: postgres: /);
    const q = cli(['query', 'high_performance'], { env });
    expect(q.code).toBe(1);
    expect(q.stderr).toMatch(/^prompt-engine query: unavailable: database unreachable: /m);
  }, 60_000);
});

it('the package bin is the built CLI', () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { bin: Record<string, string> };
  expect(pkg.bin['prompt-engine']).toBe('dist/src/cli.js');
  expect(execFileSync('head', ['-1', CLI], { encoding: 'utf8' })).toBe('#!/usr/bin/env node\n');
});
