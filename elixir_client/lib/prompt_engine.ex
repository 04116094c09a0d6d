defmodule PromptEngine do
  @moduledoc """
  Elixir client for the prompt-engine sidecar: prompt optimization (COPRO),
  prompt assembly from templates, execution tracking and a learned scorer,
  served by a Node process behind an Erlang Port — so a crash there can
  never take your VM down.

  Add it to your supervision tree:

      children = [
        {PromptEngine, pool_size: 2, database_url: "postgres://..."}
      ]

  (installing it as a path or git dependency, `mix release`, `config/runtime.exs`
  settings: `docs/deploying.md` in the repository), then call it from anywhere:

      {:ok, %{prompt: prompt}} = PromptEngine.generate_prompt("a billing service", "elixir")
      {:ok, %{optimized_prompt: better}} = PromptEngine.optimize_prompt(prompt)

  Every function returns `{:ok, result}`, `:ok` or `{:error, reason}` and
  never raises or exits because of the sidecar. Reasons:

    * `{:bad_request, message}` — an argument was wrong; the message names the field
    * `{:unknown_op, message}` — the sidecar does not serve that op
    * `{reason, message}` for other op errors (`:not_found`, `:unavailable`, `:llm_error`, ...)
    * `:timeout` — no reply within `:timeout` ms (default 5000); the work is cancelled in the sidecar
    * `:overloaded` — too many requests in flight (`:max_in_flight`); pass `queue: true` to wait instead
    * `{:sidecar_exited, status}` — the sidecar died mid-request; it is restarted by the supervisor
    * `:unavailable` — no sidecar is running (it is being restarted and did not come back in time)

  Every function takes these call options: `:name` (the instance, default
  `PromptEngine`), `:timeout`, `:queue`. Other keyword options are sent to
  the op as arguments.

  ## Events

  `subscribe/1` delivers the sidecar's events to the calling process as
  `{:prompt_engine_event, name, payload}`, e.g. `:template_updated` and
  `:model_trained`.
  """

  alias PromptEngine.Connection

  @call_opts [:name, :timeout, :queue, :route_key]

  @typedoc "Options of every call: `:name`, `:timeout` (ms), `:queue` (boolean); the rest go to the op."
  @type opts :: keyword()
  @type result :: {:ok, map()} | {:error, term()}

  # -- supervision ------------------------------------------------------------

  @doc """
  A child spec for your supervision tree. Options:

    * `:name` — instance name (default `PromptEngine`)
    * `:pool_size` — number of sidecar processes (default 1); requests are spread
      across them round-robin. Node is single-threaded: this is how you use more cores.
    * `:executable` — the sidecar: a `.js` entry run with Node, or an executable file
      (default: `priv/sidecar/dist/port/main.js` of this application, resolved at run time;
      also `config :prompt_engine, executable: ...`)
    * `:node` — the Node binary, checked to be >= 20 at start (default: `node` on the `PATH`;
      also `config :prompt_engine, node: ...`)
    * `:data_dir` — this instance's data directory; sidecar i of the pool uses `<data_dir>/<i>`
      (default: under the app's build path, or `$RELEASE_ROOT` in a release; see `PromptEngine.Sidecar`)
    * `:database_url` — PostgreSQL for tracking (default: the VM's `DATABASE_URL`, else PGlite in `data_dir`)
    * `:args` — its arguments (default `["--port-fds"]`)
    * `:env` — environment for it, e.g. `[{"NATS_URL", url}, {"LOG_LEVEL", "warn"}]`; applied last
    * `:timeout` — default per-call timeout in ms (5000)
    * `:max_in_flight` — per sidecar (10_000)
    * `:max_restarts`, `:max_seconds` — restart intensity of the sidecar supervisor (3 in 5 s)
  """
  @spec child_spec(keyword()) :: Supervisor.child_spec()
  def child_spec(opts) do
    name = Keyword.get(opts, :name, __MODULE__)
    %{id: {__MODULE__, name}, start: {PromptEngine.Supervisor, :start_link, [opts]}, type: :supervisor}
  end

  @doc "Start an instance outside a supervision tree (tests, scripts). Prefer `child_spec/1`."
  @spec start_link(keyword()) :: Supervisor.on_start()
  def start_link(opts \\ []), do: PromptEngine.Supervisor.start_link(opts)

  @doc """
  The sidecar the client runs by default, found at run time:
  `priv/sidecar/dist/port/main.js` of the `:prompt_engine` application
  (see `PromptEngine.Sidecar` and docs/deploying.md).
  """
  @spec default_executable() :: String.t() | nil
  defdelegate default_executable, to: PromptEngine.Sidecar

  @doc "Receive `{:prompt_engine_event, name, payload}` messages from the instance's sidecars."
  @spec subscribe(atom()) :: :ok
  def subscribe(name \\ __MODULE__) do
    {:ok, _} = Registry.register(PromptEngine.Supervisor.registry(name), :events, nil)
    :ok
  end

  @spec unsubscribe(atom()) :: :ok
  def unsubscribe(name \\ __MODULE__), do: Registry.unregister(PromptEngine.Supervisor.registry(name), :events)

  # -- the generic call ---------------------------------------------------------

  @doc """
  Call any op by name with a map of arguments. The functions below are thin
  wrappers over this one.
  """
  @spec call(atom(), map(), opts()) :: {:ok, term()} | :ok | {:error, term()}
  def call(op, args \\ %{}, opts \\ []) when is_atom(op) and is_map(args) do
    name = Keyword.get(opts, :name, __MODULE__)
    timeout = Keyword.get(opts, :timeout, PromptEngine.Supervisor.default_timeout(name))
    deadline = System.monotonic_time(:millisecond) + timeout
    call_until(name, op, args, Keyword.put(opts, :timeout, timeout), deadline)
  end

  # While the sidecar is being restarted its connection is not registered: wait for it
  # (within the call's own deadline) instead of failing at once.
  defp call_until(name, op, args, opts, deadline) do
    case PromptEngine.Supervisor.pick(name, Keyword.get(opts, :route_key)) do
      nil ->
        retry_or(name, op, args, opts, deadline, {:error, :unavailable})

      conn ->
        left = deadline - System.monotonic_time(:millisecond)

        case Connection.request(conn, op, args, Keyword.put(opts, :timeout, max(left, 0))) do
          {:error, :unavailable} -> retry_or(name, op, args, opts, deadline, {:error, :unavailable})
          other -> other
        end
    end
  end

  defp retry_or(name, op, args, opts, deadline, error) do
    if System.monotonic_time(:millisecond) + 20 < deadline do
      Process.sleep(20)
      call_until(name, op, args, opts, deadline)
    else
      error
    end
  end

  defp call_with(op, args, opts) do
    {call_opts, extra} = Keyword.split(opts, @call_opts)
    call(op, Map.merge(Map.new(extra), args), call_opts)
  end

  # -- ops (names and shapes of the old NIF are kept) ---------------------------

  @doc "Assemble a prompt from a template for `context` in `language`. Options: `:template_id`, `:trigger_type`, `:trigger_value`, `:category`."
  @spec generate_prompt(String.t() | map(), String.t(), opts()) :: result()
  def generate_prompt(context, language, opts \\ []), do: call_with(:generate_prompt, %{context: context, language: language}, opts)

  @doc "Optimize a prompt with COPRO. Options: `:context`, `:language`, `:breadth`, `:depth`, `:temperature`, `:devset`, `:llm`, `:budget`."
  @spec optimize_prompt(String.t(), opts()) :: result()
  def optimize_prompt(prompt, opts \\ []), do: call_with(:optimize_prompt, %{prompt: prompt}, opts)

  @doc "One chat completion on the configured OpenAI-compatible endpoint."
  @spec call_llm(String.t(), [map()], opts()) :: result()
  def call_llm(model, messages, opts \\ []) do
    {call_opts, options} = Keyword.split(opts, @call_opts)
    call(:call_llm, %{model: model, messages: messages, options: Map.new(options)}, call_opts)
  end

  # Each sidecar of a pool has its own cache: a key is always routed to the same one,
  # and clear/stats go to all of them.

  @spec cache_get(String.t(), opts()) :: result()
  def cache_get(key, opts \\ []), do: call(:cache_get, %{key: key}, Keyword.put(opts, :route_key, key))

  @spec cache_put(String.t(), term(), opts()) :: :ok | {:error, term()}
  def cache_put(key, value, opts \\ []), do: call(:cache_put, %{key: key, value: value}, Keyword.put(opts, :route_key, key))

  @spec cache_clear(opts()) :: :ok | {:error, term()}
  def cache_clear(opts \\ []) do
    case Enum.find(on_every_sidecar(:cache_clear, opts), &(&1 != :ok)) do
      nil -> :ok
      error -> error
    end
  end

  @doc "Cache figures summed over the pool's sidecars (`hit_rate` recomputed from the sums)."
  @spec cache_stats(opts()) :: result()
  def cache_stats(opts \\ []) do
    results = on_every_sidecar(:cache_stats, opts)

    case Enum.find(results, &(not match?({:ok, _}, &1))) do
      nil ->
        sum = fn k -> results |> Enum.map(fn {:ok, s} -> Map.get(s, k, 0) end) |> Enum.sum() end
        hits = sum.(:hits)
        misses = sum.(:misses)
        rate = if hits + misses == 0, do: 0.0, else: hits / (hits + misses)
        {:ok, %{total_entries: sum.(:total_entries), hits: hits, misses: misses, hit_rate: rate, evictions: sum.(:evictions), invalidations: sum.(:invalidations)}}

      error ->
        error
    end
  end

  defp on_every_sidecar(op, opts) do
    name = Keyword.get(opts, :name, __MODULE__)
    timeout = Keyword.get(opts, :timeout, PromptEngine.Supervisor.default_timeout(name))

    PromptEngine.Supervisor.connections(name)
    |> Enum.map(fn conn -> Task.async(fn -> Connection.request(conn, op, %{}, timeout: timeout) end) end)
    |> Task.await_many(timeout + 6_000)
  end

  @doc "Record a PromptExecutionEntry; returns `{:ok, %{id: id}}` once the row is durable."
  @spec track_execution(map(), opts()) :: result()
  def track_execution(entry, opts \\ []), do: call(:track_execution, entry, opts)

  @spec track_feedback(map(), opts()) :: result()
  def track_feedback(entry, opts \\ []), do: call(:track_feedback, entry, opts)

  @spec track_evolution(map(), opts()) :: result()
  def track_evolution(entry, opts \\ []), do: call(:track_evolution, entry, opts)

  @spec track_ab_result(map(), opts()) :: result()
  def track_ab_result(entry, opts \\ []), do: call(:track_ab_result, entry, opts)

  @spec track_context_signature(map(), opts()) :: result()
  def track_context_signature(entry, opts \\ []), do: call(:track_context_signature, entry, opts)

  @doc "Query the tracking store: `kind` is one of `:by_id, :similar, :by_tech_stack, :prompt_executions, :recent_feedback, :evolution_history, :high_performance`."
  @spec query(atom() | String.t(), map(), opts()) :: result()
  def query(kind, args \\ %{}, opts \\ []), do: call(:query, Map.put(args, :kind, kind), opts)

  @doc "Train a new scorer on the tracked history. Options: `:min_samples`, `:epochs`, `:holdout`."
  @spec train(opts()) :: result()
  def train(opts \\ []), do: call_with(:train, %{}, opts)

  @doc "P(success) of a prompt (or a list of prompts) in a context."
  @spec score(String.t() | [String.t()], map(), opts()) :: result()
  def score(prompts, context \\ %{}, opts \\ [])
  def score(prompts, context, opts) when is_list(prompts), do: call_with(:score, %{prompts: prompts, context: context}, opts)
  def score(prompt, context, opts), do: call_with(:score, %{prompt: prompt, context: context}, opts)

  @spec get_template(String.t(), opts()) :: result()
  def get_template(template_id, opts \\ []), do: call(:get_template, %{template_id: template_id}, opts)

  @spec search_templates(String.t(), opts()) :: result()
  def search_templates(query, opts \\ []) do
    {call_opts, search_opts} = Keyword.split(opts, @call_opts)
    call(:search_templates, %{query: query, opts: Map.new(search_opts)}, call_opts)
  end

  @spec store_template(map(), opts()) :: result()
  def store_template(template, opts \\ []), do: call(:store_template, %{template: template}, opts)

  @doc "Render a template with variables. Option `strict: true` fails naming every missing variable."
  @spec render_template(String.t(), map(), opts()) :: result()
  def render_template(template_id, variables, opts \\ []), do: call_with(:render_template, %{template_id: template_id, variables: variables}, opts)

  @spec get_sparc_prompt(String.t(), map(), opts()) :: result()
  def get_sparc_prompt(name, variables \\ %{}, opts \\ []), do: call(:get_sparc_prompt, %{name: name, variables: variables}, opts)

  @spec list_templates(opts()) :: result()
  def list_templates(opts \\ []), do: call_with(:list_templates, %{}, opts)

  @doc "Choose an A/B variant by Thompson sampling over tracked outcomes. Option `:key` makes the choice sticky per key."
  @spec select_variant(String.t(), [String.t()], opts()) :: result()
  def select_variant(test_id, variants, opts \\ []), do: call_with(:select_variant, %{test_id: test_id, variants: variants}, opts)

  # -- the closed loop ------------------------------------------------------------

  @doc """
  The prompt to use now for `experiment` (keyed by experiment and `context.model`):
  the engine serves the base, proposes and tries variants, learns from the outcomes you
  report with `report_outcome/3`, and serves better prompts over time, with guardrails.

  `base` is the prompt text, or `%{template_id: id, variables: map}` to render a template.
  The first argument may be the instance name (as in `choose_prompt(pe, "triage", base, %{model: m})`).

      {:ok, choice} = PromptEngine.choose_prompt("ticket_triage", base_prompt, %{model: "gpt-4o-mini"})
      # run choice.prompt on the model, judge the answer
      :ok = PromptEngine.report_outcome(choice, true)
  """
  @spec choose_prompt(atom() | String.t(), String.t() | map(), map() | String.t(), map() | opts()) :: result()
  def choose_prompt(a, b, c \\ %{}, d \\ [])

  def choose_prompt(pe, experiment, base, context) when is_atom(pe) and is_binary(experiment) and is_map(context),
    do: choose_prompt(experiment, base, context, name: pe)

  def choose_prompt(experiment, base, context, opts) when is_binary(experiment) and is_map(context) and is_list(opts) do
    args =
      case base do
        %{template_id: id} = t -> %{template_id: id, variables: Map.get(t, :variables, %{})}
        text -> %{prompt: text}
      end

    call_with(:choose_prompt, Map.merge(args, %{experiment: experiment, context: context}), opts)
  end

  def choose_prompt(experiment, _base, context, _opts),
    do: {:error, {:bad_request, "choose_prompt: expected an experiment name (a string) and a context map, got #{inspect(experiment)} and #{inspect(context)}"}}

  @doc """
  Report how a chosen prompt did: `success?` is whether the answer was good. It is an
  ordinary `track_execution` carrying the choice's prompt id and metadata; options
  `:execution_time_ms`, `:confidence_score`, `:response_length`, `:metadata` (merged).
  The first argument may be the instance name.
  """
  @spec report_outcome(atom() | map(), map() | boolean(), boolean() | opts(), opts()) :: :ok | {:error, term()}
  def report_outcome(a, b, c \\ [], d \\ [])

  def report_outcome(pe, choice, success?, opts) when is_atom(pe) and is_map(choice) and is_boolean(success?),
    do: report_outcome(choice, success?, Keyword.put(opts, :name, pe))

  def report_outcome(%{prompt_id: id, metadata: meta}, success?, opts, []) when is_boolean(success?) and is_list(opts) do
    {call_opts, extra} = Keyword.split(opts, @call_opts)

    entry =
      %{prompt_id: id, success: success?, execution_time_ms: Keyword.get(extra, :execution_time_ms, 0), metadata: Map.merge(meta, Keyword.get(extra, :metadata, %{}))}
      |> put_present(:confidence_score, Keyword.get(extra, :confidence_score))
      |> put_present(:response_length, Keyword.get(extra, :response_length))

    case call(:track_execution, entry, call_opts) do
      {:ok, _} -> :ok
      error -> error
    end
  end

  def report_outcome(choice, success?, _opts, _),
    do: {:error, {:bad_request, "report_outcome: expected a choice from choose_prompt and a boolean, got #{inspect(choice, limit: 5)} and #{inspect(success?)}"}}

  defp put_present(map, _key, nil), do: map
  defp put_present(map, key, value), do: Map.put(map, key, value)

  @doc "A closed-loop experiment: variants, outcomes, posteriors, P(best), leader. Options: `:model`, `:action` (`:pin`, `:unpin`, `:reset`, `:stop`, `:resume`), `:prompt_id`."
  @spec experiment(String.t(), opts()) :: result()
  def experiment(name, opts \\ []), do: call_with(:experiment, %{experiment: name}, opts)

  @spec health(opts()) :: result()
  def health(opts \\ []), do: call(:health, %{}, opts)

  @spec stats(opts()) :: result()
  def stats(opts \\ []), do: call(:stats, %{}, opts)

  @doc "Returns its arguments unchanged (latency checks)."
  @spec echo(map(), opts()) :: result()
  def echo(args, opts \\ []), do: call(:echo, args, opts)
end
