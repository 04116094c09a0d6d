# In your mix.exs: {:prompt_engine, path: "path/to/prompt-engine/elixir_client"}
# (or git: "...", subdir: "elixir_client"; docs/deploying.md). Then, in your application:
children = [
  # One sidecar on the embedded store (PGlite). A pool (pool_size: n > 1) needs a PostgreSQL
  # every sidecar shares: database_url: "postgres://..." (docs/deploying.md).
  {PromptEngine, name: PromptEngine, env: [{"LOG_LEVEL", "warn"}]}
]

# Returns once the sidecar is ready: its store open, its scorer loaded.
{:ok, sup} = Supervisor.start_link(children, strategy: :one_for_one)

{:ok, %{status: "ok"}} = PromptEngine.health()

# The closed loop: which prompt to use now, then how it went.
{:ok, choice} = PromptEngine.choose_prompt("ticket_triage", "Classify the ticket {ticket}.", %{model: "gpt-4o-mini"})
:ok = PromptEngine.report_outcome(choice, true, execution_time_ms: 850)
{:ok, %{experiments: [%{outcomes: outcomes}]}} = PromptEngine.experiment("ticket_triage")
IO.puts("ticket_triage: #{outcomes} outcomes so far")

# Optimize a prompt (COPRO with the offline proposer and the shipped scorer):
{:ok, %{optimized_prompt: better, optimization_score: score}} =
  PromptEngine.optimize_prompt("Write a {{language}} function that parses {{context}}.",
    context: %{"language" => "elixir"}, breadth: 4, depth: 1, timeout: 30_000)

IO.puts("optimized (#{Float.round(score, 3)}): #{better}")

# Errors are values; a bad argument or an unknown option names it:
{:error, %PromptEngine.Error{reason: :bad_request, message: "breadth: expected an integer in 1..50"}} =
  PromptEngine.optimize_prompt("x", breadth: 0)

{:error, %PromptEngine.Error{reason: :bad_request, message: "execution_time: unknown option of report_outcome (did you mean execution_time_ms?)" <> _}} =
  PromptEngine.report_outcome(choice, true, execution_time: 850)

# ...and every function has a bang variant that raises the same error. The instance is
# always the name: option (default PromptEngine), and every call takes timeout: (ms):
%{status: "ok"} = PromptEngine.health!(name: PromptEngine, timeout: 10_000)

# The cache the old NIF had (cache_get/1, cache_put/2, cache_clear/0, cache_stats/0; each also takes options):
:ok = PromptEngine.cache_put("greeting", %{text: "hello"})
{:ok, %{found: true, value: %{text: "hello"}}} = PromptEngine.cache_get("greeting")

# In a script, stop it again (in an application, its supervisor does):
:ok = Supervisor.stop(sup)
