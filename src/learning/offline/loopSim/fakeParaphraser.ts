/**
 * A fake OpenAI-compatible server standing in for the LLM proposer's model:
 * `/chat/completions` with `n` answers with n paraphrases of the same task,
 * none of which the request already contains. It finds the task by the
 * instructions the request carries verbatim (the proposer quotes the base
 * and the variants it builds on), as the dataset's paraphrases were
 * themselves written by LLMs from the original instruction. Its choice is a
 * deterministic function of the request, so a simulation replays the same
 * way whatever the interleaving of groups.
 */
import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { hashSeed, seededRandom } from '../../../random.js';
import type { Task } from './world.js';

export interface FakeParaphraser {
  url: string;
  requests: number;
  close(): Promise<void>;
}

export async function startFakeParaphraser(tasks: readonly Task[]): Promise<FakeParaphraser> {
  // Longest texts first, so a short template that is a substring of a longer one does not decide the task.
  const byText = tasks.flatMap((t) => t.paraphrases.map((p) => ({ text: p.text, task: t }))).sort((a, b) => b.text.length - a.text.length);
  const state = { requests: 0 };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (!req.url?.endsWith('/chat/completions') || req.method !== 'POST') return void res.writeHead(404).end('{"error":"not found"}');
      state.requests++;
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { messages: Array<{ content: string }>; n?: number };
      const text = body.messages.map((m) => m.content).join('\n');
      const hit = byText.find((x) => text.includes(x.text));
      if (hit === undefined) return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ choices: [{ message: { content: 'I cannot help with that.' } }] }));
      const fresh = [...new Set(hit.task.paraphrases.map((p) => p.text))].filter((t) => !text.includes(t));
      const rnd = seededRandom(hashSeed(createHash('sha256').update(text).digest('hex')));
      for (let i = fresh.length - 1; i > 0; i--) {
        const j = Math.floor(rnd() * (i + 1));
        [fresh[i], fresh[j]] = [fresh[j]!, fresh[i]!];
      }
      const n = Math.max(1, Math.min(body.n ?? 1, 128));
      const choices = fresh.slice(0, n).map((content) => ({ message: { role: 'assistant', content } }));
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ model: 'fake-paraphraser', choices, usage: { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 } }));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/v1`,
    get requests() {
      return state.requests;
    },
    close: () => new Promise((r) => server.close(() => r())),
  };
}
