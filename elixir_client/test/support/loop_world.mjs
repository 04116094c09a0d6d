// The closed loop's world for the Elixir fleet test (test/fleet_test.exs): the stand-in paraphrasing LLM
// on loopback, and each paraphrase's measured accuracy for one (task, model) group of data/multiprompt,
// as lines on stdout (texts base64, so newlines travel): `url <url>`, `base <b64>`, `acc <b64> <acc>`,
// `median <acc>`, then `ready`. `requests` on stdin answers `requests <n>` (proposal requests so far).
// Runs until stdin closes.
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const { loadTasks, groupsOf } = await import(path.join(root, 'dist/src/learning/offline/loopSim/world.js'));
const { startFakeParaphraser } = await import(path.join(root, 'dist/src/learning/offline/loopSim/fakeParaphraser.js'));
const [taskName, model] = process.argv.slice(2);
const task = loadTasks().find((t) => t.name === taskName);
const group = groupsOf(task).find((g) => g.model === model);
const llm = await startFakeParaphraser([task]);
const b64 = (s) => Buffer.from(s, 'utf8').toString('base64');
const out = [`url ${llm.url}`, `base ${b64(task.base.text)}`, ...[...group.accOf].map(([t, a]) => `acc ${b64(t)} ${a}`), `median ${group.medianAcc}`, 'ready'];
process.stdout.write(`${out.join('\n')}\n`);
readline.createInterface({ input: process.stdin }).on('line', (l) => {
  if (l.trim() === 'requests') process.stdout.write(`requests ${llm.requests}\n`);
});
process.stdin.on('end', () => void llm.close().then(() => process.exit(0)));
