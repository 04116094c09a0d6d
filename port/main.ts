/**
 * The Port entry point: what `port/prompt_engine` runs. Speaks the Erlang
 * Port protocol (docs/protocol.md) on fds 3/4 with `--port-fds`, else on
 * stdin/stdout.
 */
import { main } from '../src/cli.js';

main(['port', ...process.argv.slice(2)]).catch((err: unknown) => {
  process.stderr.write(`prompt-engine: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
