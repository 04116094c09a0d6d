# In your mix.exs: {:prompt_engine, path: "path/to/prompt-engine/elixir_client"}
# (or git: "...", subdir: "elixir_client"; docs/deploying.md). Then, in your application:
children = [
  {PromptEngine, name: PromptEngine, pool_size: 2, env: [{"LOG_LEVEL", "warn"}]}
]

{:ok, sup} = Supervisor.start_link(children, strategy: :one_for_one)

{:ok, %{status: "ok"}} = PromptEngine.health()

# Optimize a prompt (COPRO with the offline proposer and the shipped scorer):
{:ok, %{optimized_prompt: better, optimization_score: score}} =
  PromptEngine.optimize_prompt("Write a {{language}} function that parses {{context}}.",
    context: %{"language" => "elixir"}, breadth: 4, depth: 1, timeout: 30_000)

IO.puts("optimized (#{Float.round(score, 3)}): #{better}")

# Errors are values; a bad argument names the field:
{:error, %PromptEngine.Error{reason: :bad_request, message: "breadth: expected an integer in 1..50"}} =
  PromptEngine.optimize_prompt("x", breadth: 0)

# ...and every function has a bang variant that raises the same error:
%{status: "ok"} = PromptEngine.health!()

# The cache the old NIF had:
:ok = PromptEngine.cache_put("greeting", %{text: "hello"})
{:ok, %{found: true, value: %{text: "hello"}}} = PromptEngine.cache_get("greeting")

# (in a script, stop it again: Supervisor.stop(sup))
