defmodule PromptEngine do
  @moduledoc """
  Elixir client for the prompt-engine sidecar: prompt optimization (COPRO),
  prompt assembly from templates, execution tracking, a learned scorer and
  the closed loop, served by a Node process behind an Erlang Port — so a
  crash there can never take your VM down.

  This module owns the public API: argument shapes, call options, errors,
  bang variants and telemetry. `PromptEngine.Supervisor` owns an instance,
  `PromptEngine.Connection` one sidecar, `PromptEngine.LogRelay` its logs.

  Add it to your supervision tree:

      children = [
        {PromptEngine, pool_size: 2, database_url: "postgres://..."}
      ]

  (installing it as a path or git dependency, `mix release`, `config/runtime.exs`
  settings: `docs/deploying.md` in the repository), then call it from anywhere:

      {:ok, %{prompt: prompt}} = PromptEngine.generate_prompt("a billing service", "elixir")
      {:ok, %{optimized_prompt: better}} = PromptEngine.optimize_prompt(prompt)

  ## Results and errors

  Every function returns `{:ok, result}` (or `:ok`) or
  `{:error, %PromptEngine.Error{reason: atom, message: binary}}`, and never
  raises or exits in your process because of the sidecar or of a wrong
  argument. Each has a bang variant (`health!/1`, `choose_prompt!/4`, ...)
  that returns the result or raises the `PromptEngine.Error`. Reasons:

    * `:bad_request` — an argument was wrong; the message names the field
      (the client checks shapes, the sidecar checks values)
    * `:unknown_op`, `:not_found`, `:unavailable`, `:llm_error`, ... — the op's own errors
    * `:timeout` — no reply within `:timeout` ms (default 5000); the work is cancelled in the sidecar
    * `:overloaded` — too many requests in flight (`:max_in_flight`); pass `queue: true` to wait instead
    * `:sidecar_exited` — the sidecar died mid-request (`details`: exit status); it is restarted by the supervisor
    * `:unavailable` — no sidecar came up within the call's timeout (it is being restarted)
    * `:no_instance` — no instance of that `name:` was started

  ## Arguments and options

  Every argument that is a map may be given as a keyword list, and every
  `opts` as a keyword list or a map. Call options: `:name` (the instance,
  default `PromptEngine`), `:timeout` (ms), `:queue` (boolean); the other
  options are sent to the op as arguments. Before sending, `DateTime` and
  `NaiveDateTime` values anywhere in the arguments become ISO 8601 strings
  (a `NaiveDateTime` is taken as UTC: `"...Z"`), `Date` values
  `"YYYY-MM-DD"`, and keyword lists become maps — the forms the sidecar's
  tracking ops accept for `timestamp`, `evolution_timestamp`,
  `test_timestamp` and `created_at`.

  ## Events

  `subscribe/1` delivers the sidecar's events to the calling process as
  `{:prompt_engine_event, name, payload}`, e.g. `:template_updated` and
  `:model_trained`.

  ## Telemetry

  When the `:telemetry` application is loaded (checked once, when an
  instance starts; it is not a dependency of this client), every public
  call emits:

    * `[:prompt_engine, :request, :start]` — measurements `%{system_time, monotonic_time}`,
      metadata `%{op: atom, instance: atom}`
    * `[:prompt_engine, :request, :stop]` — measurements `%{duration, monotonic_time}`
      (native time units), metadata `%{op, instance, result: :ok | :error,
      reason: atom | nil, error: PromptEngine.Error.t() | nil}`
    * `[:prompt_engine, :request, :exception]` — when the call raised: a bang
      variant raising its `PromptEngine.Error`, or an unexpected failure inside
      the client (the non-bang caller then gets `{:error, %Error{reason: :internal}}`);
      measurements `%{duration, monotonic_time}`, metadata `%{op, instance, kind, reason, stacktrace}`

  `cache_clear/1` and `cache_stats/1` are one event each, however many
  sidecars they reach; `report_outcome/4` is a `:track_execution` event.

  ## Logging

  The sidecar's log lines (pino JSON on its stderr) reach `Logger` with
  their level mapped and their fields as metadata; see `PromptEngine.LogRelay`.
  """

  alias PromptEngine.{Connection, Error}

  @compile {:no_warn_undefined, :telemetry}

  @call_opts [:name, :timeout, :queue, :route_key]
  @bang_key {__MODULE__, :raise}

  @typedoc "Call options, as a keyword list or a map: `:name`, `:timeout` (ms), `:queue` (boolean); the rest go to the op."
  @type opts :: keyword() | map()
  @typedoc "A map of arguments, or the same as a keyword list."
  @type args :: map() | keyword()
  @type error :: {:error, Error.t()}
  @type result :: {:ok, map()} | error()

  # -- supervision ------------------------------------------------------------

  @doc """
  A child spec for your supervision tree. Options (a keyword list or a map),
  checked when the instance starts; an unknown option or a wrong type makes
  the start fail with `%PromptEngine.Error{reason: :bad_option}` naming it:

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
    * `:ready_timeout` — how long a sidecar may take to start (20_000 ms)
    * `:capture_stderr` — route the sidecar's logs to `Logger` (default `true`)

  Example:

      children = [{PromptEngine, name: MyApp.Prompts, pool_size: 2}]
      Supervisor.start_link(children, strategy: :one_for_one)
  """
  @spec child_spec(keyword() | map()) :: Supervisor.child_spec()
  def child_spec(opts) do
    name = if is_map(opts), do: Map.get(opts, :name, __MODULE__), else: (Keyword.keyword?(opts) && Keyword.get(opts, :name)) || __MODULE__
    %{id: {__MODULE__, name}, start: {PromptEngine.Supervisor, :start_link, [opts]}, type: :supervisor}
  end

  @doc """
  Start an instance outside a supervision tree (tests, scripts). Prefer
  `child_spec/1`. Takes the options of `child_spec/1`.

      {:ok, sup} = PromptEngine.start_link(name: Scratch, pool_size: 1)
      {:error, %PromptEngine.Error{reason: :bad_option}} = PromptEngine.start_link(pool: 1)
  """
  @spec start_link(keyword() | map()) :: Supervisor.on_start() | error()
  def start_link(opts \\ []), do: PromptEngine.Supervisor.start_link(opts)

  @doc """
  The sidecar the client runs by default, found at run time:
  `priv/sidecar/dist/port/main.js` of the `:prompt_engine` application
  (see `PromptEngine.Sidecar` and docs/deploying.md); `nil` when the
  application is not on the code path.

      PromptEngine.default_executable()
      #=> ".../_build/dev/lib/prompt_engine/priv/sidecar/dist/port/main.js"
  """
  @spec default_executable() :: String.t() | nil
  defdelegate default_executable, to: PromptEngine.Sidecar

  @doc """
  Receive `{:prompt_engine_event, name, payload}` messages from the
  instance's sidecars. Takes the instance name, or options with `:name`.

      :ok = PromptEngine.subscribe()
      receive do
        {:prompt_engine_event, :template_updated, %{template_name: name}} -> name
      end
  """
  @spec subscribe(atom() | opts()) :: :ok | error()
  def subscribe(name_or_opts \\ __MODULE__) do
    with {:ok, name} <- instance_name(name_or_opts, :subscribe) do
      {:ok, _} = Registry.register(PromptEngine.Supervisor.registry(name), :events, nil)
      :ok
    end
  rescue
    ArgumentError -> no_instance(instance_name!(name_or_opts), :subscribe)
  end

  @doc """
  Stop receiving the instance's events.

      :ok = PromptEngine.unsubscribe()
  """
  @spec unsubscribe(atom() | opts()) :: :ok | error()
  def unsubscribe(name_or_opts \\ __MODULE__) do
    with {:ok, name} <- instance_name(name_or_opts, :unsubscribe) do
      Registry.unregister(PromptEngine.Supervisor.registry(name), :events)
    end
  rescue
    ArgumentError -> no_instance(instance_name!(name_or_opts), :unsubscribe)
  end

  # -- the generic call ---------------------------------------------------------

  @doc """
  Call any op by name with its arguments (a map or a keyword list). The
  functions below are thin wrappers over this one; call options other than
  `:name`, `:timeout` and `:queue` are merged into the arguments.

      {:ok, %{prompts: _}} = PromptEngine.call(:prompt_stats, %{prompt_id: "p1"})
      {:error, %PromptEngine.Error{reason: :unknown_op}} = PromptEngine.call(:nope)
  """
  @spec call(atom(), args(), opts()) :: :ok | {:ok, term()} | error()
  def call(op, args \\ %{}, opts \\ [])

  def call(op, args, opts) when is_atom(op) and op not in [nil, true, false] do
    with {:ok, args} <- args_map(args, op, "arguments"),
         {:ok, copts, extra} <- split_opts(opts, op) do
      request(op, Map.merge(extra, args), copts)
    end
  end

  def call(op, _args, _opts), do: bad(nil, "op: expected an atom such as :health, got: #{inspect(op, limit: 10)}")

  @doc """
  Like `call/3`, but returns the result or raises `PromptEngine.Error`.

      %{status: "ok"} = PromptEngine.call!(:health)
  """
  @spec call!(atom(), args(), opts()) :: term()
  def call!(op, args \\ %{}, opts \\ []), do: bang(fn -> call(op, args, opts) end)

  # -- ops (names and shapes of the old NIF are kept) ---------------------------

  @doc """
  Assemble a prompt from a template for `context` (text or a map) in
  `language`. Options: `:template_id`, `:trigger_type`, `:trigger_value`, `:category`.

      {:ok, %{prompt: prompt, template_used: _}} = PromptEngine.generate_prompt("migrate the ledger", "elixir")
  """
  @spec generate_prompt(String.t() | args(), String.t(), opts()) :: result()
  def generate_prompt(context, language, opts \\ []), do: op(:generate_prompt, %{context: context, language: language}, opts)

  @doc """
  Like `generate_prompt/3`, but returns the result or raises `PromptEngine.Error`.

      %{prompt: prompt} = PromptEngine.generate_prompt!("migrate the ledger", "elixir")
  """
  @spec generate_prompt!(String.t() | args(), String.t(), opts()) :: map()
  def generate_prompt!(context, language, opts \\ []), do: bang(fn -> generate_prompt(context, language, opts) end)

  @doc """
  Optimize a prompt with COPRO. Options: `:context`, `:language`, `:breadth`,
  `:depth`, `:temperature`, `:devset`, `:llm`, `:budget`.

      {:ok, %{optimized_prompt: better, optimization_score: score}} =
        PromptEngine.optimize_prompt("Write a {{language}} parser.", breadth: 4, depth: 1, timeout: 30_000)
  """
  @spec optimize_prompt(String.t(), opts()) :: result()
  def optimize_prompt(prompt, opts \\ []), do: op(:optimize_prompt, %{prompt: prompt}, opts)

  @doc """
  Like `optimize_prompt/2`, but returns the result or raises `PromptEngine.Error`.

      %{optimized_prompt: better} = PromptEngine.optimize_prompt!("Write a parser.", depth: 1)
  """
  @spec optimize_prompt!(String.t(), opts()) :: map()
  def optimize_prompt!(prompt, opts \\ []), do: bang(fn -> optimize_prompt(prompt, opts) end)

  @doc """
  One chat completion on the configured OpenAI-compatible endpoint. Options
  other than the call options go to the completion (`temperature:`, ...).

      {:ok, %{text: text}} = PromptEngine.call_llm("gpt-4o-mini", [%{role: "user", content: "hi"}], temperature: 0.2)
  """
  @spec call_llm(String.t(), [map() | keyword()], opts()) :: result()
  def call_llm(model, messages, opts \\ []) do
    with {:ok, copts, options} <- split_opts(opts, :call_llm) do
      request(:call_llm, %{model: model, messages: messages, options: options}, copts)
    end
  end

  @doc """
  Like `call_llm/3`, but returns the result or raises `PromptEngine.Error`.

      %{text: text} = PromptEngine.call_llm!("gpt-4o-mini", [[role: "user", content: "hi"]])
  """
  @spec call_llm!(String.t(), [map() | keyword()], opts()) :: map()
  def call_llm!(model, messages, opts \\ []), do: bang(fn -> call_llm(model, messages, opts) end)

  # Each sidecar of a pool has its own cache: a key is always routed to the same one,
  # and clear/stats go to all of them.

  @doc """
  Look a key up in the sidecar's cache.

      {:ok, %{found: true, value: %{text: "hello"}}} = PromptEngine.cache_get("greeting")
      {:ok, %{found: false}} = PromptEngine.cache_get("nothing here")
  """
  @spec cache_get(String.t(), opts()) :: result()
  def cache_get(key, opts \\ []), do: op(:cache_get, %{key: key}, opts, route_key: key)

  @doc """
  Like `cache_get/2`, but returns the result or raises `PromptEngine.Error`.

      %{found: false} = PromptEngine.cache_get!("nothing here")
  """
  @spec cache_get!(String.t(), opts()) :: map()
  def cache_get!(key, opts \\ []), do: bang(fn -> cache_get(key, opts) end)

  @doc """
  Store a value (any term) under a key in the sidecar's cache.

      :ok = PromptEngine.cache_put("greeting", %{text: "hello"})
  """
  @spec cache_put(String.t(), term(), opts()) :: :ok | error()
  def cache_put(key, value, opts \\ []), do: op(:cache_put, %{key: key, value: value}, opts, route_key: key)

  @doc """
  Like `cache_put/3`, but raises `PromptEngine.Error` on failure.

      :ok = PromptEngine.cache_put!("greeting", %{text: "hello"})
  """
  @spec cache_put!(String.t(), term(), opts()) :: :ok
  def cache_put!(key, value, opts \\ []), do: bang(fn -> cache_put(key, value, opts) end)

  @doc """
  Empty the cache of every sidecar of the instance.

      :ok = PromptEngine.cache_clear()
  """
  @spec cache_clear(opts()) :: :ok | error()
  def cache_clear(opts \\ []) do
    on_every_sidecar(:cache_clear, opts, fn results ->
      Enum.find(results, :ok, &(&1 != :ok))
    end)
  end

  @doc """
  Like `cache_clear/1`, but raises `PromptEngine.Error` on failure.

      :ok = PromptEngine.cache_clear!()
  """
  @spec cache_clear!(opts()) :: :ok
  def cache_clear!(opts \\ []), do: bang(fn -> cache_clear(opts) end)

  @doc """
  Cache figures summed over the pool's sidecars (`hit_rate` recomputed from the sums).

      {:ok, %{total_entries: n, hits: _, misses: _, hit_rate: _}} = PromptEngine.cache_stats()
  """
  @spec cache_stats(opts()) :: result()
  def cache_stats(opts \\ []) do
    on_every_sidecar(:cache_stats, opts, fn results ->
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
    end)
  end

  @doc """
  Like `cache_stats/1`, but returns the result or raises `PromptEngine.Error`.

      %{hit_rate: rate} = PromptEngine.cache_stats!()
  """
  @spec cache_stats!(opts()) :: map()
  def cache_stats!(opts \\ []), do: bang(fn -> cache_stats(opts) end)

  @doc """
  Record a PromptExecutionEntry; returns `{:ok, %{id: id}}` once the row is
  durable. `timestamp` may be a `DateTime`, a `NaiveDateTime` (UTC), an ISO
  8601 string or unix milliseconds; it defaults to now.

      {:ok, %{id: id}} =
        PromptEngine.track_execution(prompt_id: "p1", execution_time_ms: 120, success: true, timestamp: DateTime.utc_now())
  """
  @spec track_execution(args(), opts()) :: result()
  def track_execution(entry, opts \\ []), do: track(:track_execution, entry, opts)

  @doc """
  Like `track_execution/2`, but returns the result or raises `PromptEngine.Error`.

      %{id: id} = PromptEngine.track_execution!(%{prompt_id: "p1", execution_time_ms: 120, success: true})
  """
  @spec track_execution!(args(), opts()) :: map()
  def track_execution!(entry, opts \\ []), do: bang(fn -> track_execution(entry, opts) end)

  @doc """
  Record feedback on a prompt (`feedback_type`, `rating`, `comment`, `user_id`, `timestamp`, `context`).

      {:ok, %{id: _}} = PromptEngine.track_feedback(prompt_id: "p1", feedback_type: :quality, rating: 5)
  """
  @spec track_feedback(args(), opts()) :: result()
  def track_feedback(entry, opts \\ []), do: track(:track_feedback, entry, opts)

  @doc """
  Like `track_feedback/2`, but returns the result or raises `PromptEngine.Error`.

      %{id: _} = PromptEngine.track_feedback!(prompt_id: "p1", feedback_type: :quality, rating: 5)
  """
  @spec track_feedback!(args(), opts()) :: map()
  def track_feedback!(entry, opts \\ []), do: bang(fn -> track_feedback(entry, opts) end)

  @doc """
  Record that one prompt evolved into another (`evolution_timestamp` as for `track_execution/2`).

      {:ok, %{id: _}} =
        PromptEngine.track_evolution(original_prompt_id: "p1", evolved_prompt_id: "p2", evolution_type: :refinement, performance_improvement: 0.1)
  """
  @spec track_evolution(args(), opts()) :: result()
  def track_evolution(entry, opts \\ []), do: track(:track_evolution, entry, opts)

  @doc """
  Like `track_evolution/2`, but returns the result or raises `PromptEngine.Error`.

      %{id: _} = PromptEngine.track_evolution!(original_prompt_id: "p1", evolved_prompt_id: "p2", evolution_type: :refinement)
  """
  @spec track_evolution!(args(), opts()) :: map()
  def track_evolution!(entry, opts \\ []), do: bang(fn -> track_evolution(entry, opts) end)

  @doc """
  Record the result of an A/B test (`test_timestamp` as for `track_execution/2`).

      {:ok, %{id: _}} =
        PromptEngine.track_ab_result(test_id: "t", variant_a_prompt_id: "p1", variant_b_prompt_id: "p2", winner: :a,
          confidence_level: 0.9, sample_size: 10, test_duration: 1000)
  """
  @spec track_ab_result(args(), opts()) :: result()
  def track_ab_result(entry, opts \\ []), do: track(:track_ab_result, entry, opts)

  @doc """
  Like `track_ab_result/2`, but returns the result or raises `PromptEngine.Error`.

      %{id: _} = PromptEngine.track_ab_result!(test_id: "t", variant_a_prompt_id: "p1", variant_b_prompt_id: "p2", winner: :a)
  """
  @spec track_ab_result!(args(), opts()) :: map()
  def track_ab_result!(entry, opts \\ []), do: bang(fn -> track_ab_result(entry, opts) end)

  @doc """
  Record a project's context signature (`created_at` as for `track_execution/2`).

      {:ok, %{id: _}} =
        PromptEngine.track_context_signature(signature_hash: "s", project_tech_stack: ["elixir"], project_type: "web", complexity_level: "low")
  """
  @spec track_context_signature(args(), opts()) :: result()
  def track_context_signature(entry, opts \\ []), do: track(:track_context_signature, entry, opts)

  @doc """
  Like `track_context_signature/2`, but returns the result or raises `PromptEngine.Error`.

      %{id: _} = PromptEngine.track_context_signature!(signature_hash: "s", project_tech_stack: ["elixir"])
  """
  @spec track_context_signature!(args(), opts()) :: map()
  def track_context_signature!(entry, opts \\ []), do: bang(fn -> track_context_signature(entry, opts) end)

  defp track(op, entry, opts) do
    with {:ok, entry} <- args_map(entry, op, "entry"), do: op(op, entry, opts)
  end

  @doc """
  Query the tracking store: `kind` is one of `:by_id, :similar, :by_tech_stack,
  :prompt_executions, :recent_feedback, :evolution_history, :high_performance`.

      {:ok, %{rows: rows}} = PromptEngine.query(:prompt_executions, prompt_id: "p1", limit: 10)
  """
  @spec query(atom() | String.t(), args(), opts()) :: result()
  def query(kind, args \\ %{}, opts \\ []) do
    with {:ok, args} <- args_map(args, :query, "arguments"), do: op(:query, Map.put(args, :kind, kind), opts)
  end

  @doc """
  Like `query/3`, but returns the result or raises `PromptEngine.Error`.

      %{rows: rows} = PromptEngine.query!(:recent_feedback, duration: "1h")
  """
  @spec query!(atom() | String.t(), args(), opts()) :: map()
  def query!(kind, args \\ %{}, opts \\ []), do: bang(fn -> query(kind, args, opts) end)

  @doc """
  Train a new scorer on the tracked history. Options: `:min_samples`, `:epochs`, `:holdout`.

      {:ok, %{auc: auc, promoted: promoted?}} = PromptEngine.train(min_samples: 50, timeout: 120_000)
  """
  @spec train(opts()) :: result()
  def train(opts \\ []), do: op(:train, %{}, opts)

  @doc """
  Like `train/1`, but returns the result or raises `PromptEngine.Error`.

      %{auc: auc} = PromptEngine.train!(timeout: 120_000)
  """
  @spec train!(opts()) :: map()
  def train!(opts \\ []), do: bang(fn -> train(opts) end)

  @doc """
  P(success) of a prompt (or a list of prompts) in a context (a map or a keyword list).

      {:ok, %{score: p}} = PromptEngine.score("Classify the ticket.", %{model: "gpt-4o-mini"})
      {:ok, %{scores: [_, _]}} = PromptEngine.score(["A", "B"], model: "gpt-4o-mini")
  """
  @spec score(String.t() | [String.t()], args(), opts()) :: result()
  def score(prompts, context \\ %{}, opts \\ []) do
    with {:ok, context} <- args_map(context, :score, "context") do
      args = if is_list(prompts), do: %{prompts: prompts, context: context}, else: %{prompt: prompts, context: context}
      op(:score, args, opts)
    end
  end

  @doc """
  Like `score/3`, but returns the result or raises `PromptEngine.Error`.

      %{score: p} = PromptEngine.score!("Classify the ticket.")
  """
  @spec score!(String.t() | [String.t()], args(), opts()) :: map()
  def score!(prompts, context \\ %{}, opts \\ []), do: bang(fn -> score(prompts, context, opts) end)

  @doc """
  A template by id.

      {:ok, %{template: %{id: "sparc_completion"}}} = PromptEngine.get_template("sparc_completion")
  """
  @spec get_template(String.t(), opts()) :: result()
  def get_template(template_id, opts \\ []), do: op(:get_template, %{template_id: template_id}, opts)

  @doc """
  Like `get_template/2`, but returns the result or raises `PromptEngine.Error`.

      %{template: t} = PromptEngine.get_template!("sparc_completion")
  """
  @spec get_template!(String.t(), opts()) :: map()
  def get_template!(template_id, opts \\ []), do: bang(fn -> get_template(template_id, opts) end)

  @doc """
  Search templates by text; options other than the call options are search options (`limit:`, ...).

      {:ok, %{templates: found}} = PromptEngine.search_templates("phoenix", limit: 5)
  """
  @spec search_templates(String.t(), opts()) :: result()
  def search_templates(query, opts \\ []) do
    with {:ok, copts, search_opts} <- split_opts(opts, :search_templates) do
      request(:search_templates, %{query: query, opts: search_opts}, copts)
    end
  end

  @doc """
  Like `search_templates/2`, but returns the result or raises `PromptEngine.Error`.

      %{templates: found} = PromptEngine.search_templates!("phoenix")
  """
  @spec search_templates!(String.t(), opts()) :: map()
  def search_templates!(query, opts \\ []), do: bang(fn -> search_templates(query, opts) end)

  @doc """
  Store a template (a map or a keyword list).

      {:ok, %{stored: true}} = PromptEngine.store_template(id: "greet", template: "Hello {{name}}", language: "any")
  """
  @spec store_template(args(), opts()) :: result()
  def store_template(template, opts \\ []) do
    with {:ok, template} <- args_map(template, :store_template, "template"), do: op(:store_template, %{template: template}, opts)
  end

  @doc """
  Like `store_template/2`, but returns the result or raises `PromptEngine.Error`.

      %{stored: true} = PromptEngine.store_template!(%{id: "greet", template: "Hello {{name}}"})
  """
  @spec store_template!(args(), opts()) :: map()
  def store_template!(template, opts \\ []), do: bang(fn -> store_template(template, opts) end)

  @doc """
  Render a template with variables (a map or a keyword list). Option
  `strict: true` fails naming every missing variable.

      {:ok, %{prompt: text}} = PromptEngine.render_template("ex_rules", %{"context" => "go"})
      {:error, %PromptEngine.Error{reason: :bad_request}} = PromptEngine.render_template("service_blueprint", %{}, strict: true)
  """
  @spec render_template(String.t(), args(), opts()) :: result()
  def render_template(template_id, variables, opts \\ []) do
    with {:ok, variables} <- args_map(variables, :render_template, "variables"),
         do: op(:render_template, %{template_id: template_id, variables: variables}, opts)
  end

  @doc """
  Like `render_template/3`, but returns the result or raises `PromptEngine.Error`.

      %{prompt: text} = PromptEngine.render_template!("ex_rules", context: "go")
  """
  @spec render_template!(String.t(), args(), opts()) :: map()
  def render_template!(template_id, variables, opts \\ []), do: bang(fn -> render_template(template_id, variables, opts) end)

  @doc """
  The prompt of a SPARC phase (`"specification"`, `"pseudocode"`, ...) with variables.

      {:ok, %{prompt: spec}} = PromptEngine.get_sparc_prompt("specification", %{"language" => "elixir"})
  """
  @spec get_sparc_prompt(String.t(), args(), opts()) :: result()
  def get_sparc_prompt(name, variables \\ %{}, opts \\ []) do
    with {:ok, variables} <- args_map(variables, :get_sparc_prompt, "variables"),
         do: op(:get_sparc_prompt, %{name: name, variables: variables}, opts)
  end

  @doc """
  Like `get_sparc_prompt/3`, but returns the result or raises `PromptEngine.Error`.

      %{prompt: spec} = PromptEngine.get_sparc_prompt!("specification", language: "elixir")
  """
  @spec get_sparc_prompt!(String.t(), args(), opts()) :: map()
  def get_sparc_prompt!(name, variables \\ %{}, opts \\ []), do: bang(fn -> get_sparc_prompt(name, variables, opts) end)

  @doc """
  Every template the sidecar knows.

      {:ok, %{templates: templates}} = PromptEngine.list_templates()
  """
  @spec list_templates(opts()) :: result()
  def list_templates(opts \\ []), do: op(:list_templates, %{}, opts)

  @doc """
  Like `list_templates/1`, but returns the result or raises `PromptEngine.Error`.

      %{templates: templates} = PromptEngine.list_templates!()
  """
  @spec list_templates!(opts()) :: map()
  def list_templates!(opts \\ []), do: bang(fn -> list_templates(opts) end)

  @doc """
  Choose an A/B variant by Thompson sampling over tracked outcomes. Option
  `:key` makes the choice sticky per key.

      {:ok, %{variant: v}} = PromptEngine.select_variant("greeting_test", ["p1", "p2"], key: "user-42")
  """
  @spec select_variant(String.t(), [String.t()], opts()) :: result()
  def select_variant(test_id, variants, opts \\ []), do: op(:select_variant, %{test_id: test_id, variants: variants}, opts)

  @doc """
  Like `select_variant/3`, but returns the result or raises `PromptEngine.Error`.

      %{variant: v} = PromptEngine.select_variant!("greeting_test", ["p1", "p2"])
  """
  @spec select_variant!(String.t(), [String.t()], opts()) :: map()
  def select_variant!(test_id, variants, opts \\ []), do: bang(fn -> select_variant(test_id, variants, opts) end)

  # -- the closed loop ------------------------------------------------------------

  @doc """
  The prompt to use now for `experiment` (keyed by experiment and `context.model`):
  the engine serves the base, proposes and tries variants, learns from the outcomes you
  report with `report_outcome/3`, and serves better prompts over time, with guardrails.

  `base` is the prompt text, or `%{template_id: id, variables: map}` to render a template;
  `context` is a map or a keyword list. The first argument may be the instance name
  (as in `choose_prompt(pe, "triage", base, %{model: m})`).

      {:ok, choice} = PromptEngine.choose_prompt("ticket_triage", base_prompt, %{model: "gpt-4o-mini"})
      # run choice.prompt on the model, judge the answer
      :ok = PromptEngine.report_outcome(choice, true)
  """
  @spec choose_prompt(atom() | String.t(), String.t() | map(), args() | String.t() | map(), args() | opts()) :: result()
  def choose_prompt(a, b, c \\ %{}, d \\ [])

  def choose_prompt(pe, experiment, base, context) when is_atom(pe) and pe not in [nil, true, false] and is_binary(experiment),
    do: choose_prompt(experiment, base, context, name: pe)

  def choose_prompt(experiment, base, context, opts) when is_binary(experiment) do
    with {:ok, context} <- args_map(context, :choose_prompt, "context") do
      args =
        case base do
          %{template_id: id} = t -> %{template_id: id, variables: Map.get(t, :variables, %{})}
          [{_, _} | _] = kw -> if Keyword.keyword?(kw) and Keyword.has_key?(kw, :template_id), do: %{template_id: kw[:template_id], variables: Keyword.get(kw, :variables, %{})}, else: %{prompt: kw}
          text -> %{prompt: text}
        end

      op(:choose_prompt, Map.merge(args, %{experiment: experiment, context: context}), opts)
    end
  end

  def choose_prompt(experiment, _base, _context, _opts),
    do: bad(:choose_prompt, "experiment: expected the experiment's name (a string), got #{inspect(experiment, limit: 10)}")

  @doc """
  Like `choose_prompt/4`, but returns the choice or raises `PromptEngine.Error`.

      choice = PromptEngine.choose_prompt!("ticket_triage", base_prompt, model: "gpt-4o-mini")
  """
  @spec choose_prompt!(atom() | String.t(), String.t() | map(), args() | String.t() | map(), args() | opts()) :: map()
  def choose_prompt!(a, b, c \\ %{}, d \\ []), do: bang(fn -> choose_prompt(a, b, c, d) end)

  @doc """
  Report how a chosen prompt did: `success?` is whether the answer was good. It is an
  ordinary `track_execution` carrying the choice's prompt id and metadata; options
  `:execution_time_ms`, `:confidence_score`, `:response_length`, `:metadata` (merged),
  `:timestamp`. The first argument may be the instance name.

      {:ok, choice} = PromptEngine.choose_prompt("ticket_triage", base_prompt, %{model: "gpt-4o-mini"})
      :ok = PromptEngine.report_outcome(choice, true, execution_time_ms: 850)
  """
  @spec report_outcome(atom() | map(), map() | boolean(), boolean() | opts(), opts()) :: :ok | error()
  def report_outcome(a, b, c \\ [], d \\ [])

  def report_outcome(pe, choice, success?, opts) when is_atom(pe) and pe not in [nil, true, false] and is_map(choice) do
    with {:ok, opts} <- keyword(opts, :report_outcome), do: report_outcome(choice, success?, Keyword.put(opts, :name, pe))
  end

  def report_outcome(%{prompt_id: id, metadata: meta}, success?, opts, []) when is_boolean(success?) and is_map(meta) do
    with {:ok, copts, extra} <- split_opts(opts, :report_outcome),
         {:ok, extra_meta} <- args_map(Map.get(extra, :metadata, %{}), :report_outcome, "metadata") do
      entry =
        %{prompt_id: id, success: success?, execution_time_ms: Map.get(extra, :execution_time_ms, 0), metadata: Map.merge(meta, extra_meta)}
        |> Map.merge(Map.take(extra, [:confidence_score, :response_length, :timestamp]))

      case request(:track_execution, entry, copts) do
        {:ok, _} -> :ok
        error -> error
      end
    end
  end

  def report_outcome(choice, success?, _opts, _),
    do: bad(:report_outcome, "expected a choice from choose_prompt and a boolean, got #{inspect(choice, limit: 5)} and #{inspect(success?)}")

  @doc """
  Like `report_outcome/4`, but raises `PromptEngine.Error` on failure.

      :ok = PromptEngine.report_outcome!(choice, false)
  """
  @spec report_outcome!(atom() | map(), map() | boolean(), boolean() | opts(), opts()) :: :ok
  def report_outcome!(a, b, c \\ [], d \\ []), do: bang(fn -> report_outcome(a, b, c, d) end)

  @doc """
  A closed-loop experiment: variants, outcomes, posteriors, P(best), leader.
  Options: `:model`, `:action` (`:pin`, `:unpin`, `:reset`, `:stop`, `:resume`), `:prompt_id`.

      {:ok, %{experiments: [exp]}} = PromptEngine.experiment("ticket_triage")
      exp.improvement
  """
  @spec experiment(String.t(), opts()) :: result()
  def experiment(name, opts \\ []), do: op(:experiment, %{experiment: name}, opts)

  @doc """
  Like `experiment/2`, but returns the result or raises `PromptEngine.Error`.

      %{experiments: [exp]} = PromptEngine.experiment!("ticket_triage")
  """
  @spec experiment!(String.t(), opts()) :: map()
  def experiment!(name, opts \\ []), do: bang(fn -> experiment(name, opts) end)

  @doc """
  The sidecar's health: `status`, `version`, `os_pid`, `in_flight`, services.

      {:ok, %{status: "ok", os_pid: pid}} = PromptEngine.health()
      {:error, %PromptEngine.Error{reason: :no_instance}} = PromptEngine.health(name: NotStarted)
  """
  @spec health(opts()) :: result()
  def health(opts \\ []), do: op(:health, %{}, opts)

  @doc """
  Like `health/1`, but returns the result or raises `PromptEngine.Error`.

      %{status: "ok"} = PromptEngine.health!()
  """
  @spec health!(opts()) :: map()
  def health!(opts \\ []), do: bang(fn -> health(opts) end)

  @doc """
  The sidecar's counters: uptime, per-op calls, errors and latency, services.

      {:ok, %{uptime_ms: up, ops: ops}} = PromptEngine.stats()
  """
  @spec stats(opts()) :: result()
  def stats(opts \\ []), do: op(:stats, %{}, opts)

  @doc """
  Like `stats/1`, but returns the result or raises `PromptEngine.Error`.

      %{uptime_ms: up} = PromptEngine.stats!()
  """
  @spec stats!(opts()) :: map()
  def stats!(opts \\ []), do: bang(fn -> stats(opts) end)

  @doc """
  Returns its arguments unchanged (latency checks); `delay_ms:` delays the reply.

      {:ok, %{n: 1}} = PromptEngine.echo(%{n: 1})
  """
  @spec echo(args(), opts()) :: result()
  def echo(args, opts \\ []) do
    with {:ok, args} <- args_map(args, :echo, "arguments"), do: op(:echo, args, opts)
  end

  @doc """
  Like `echo/2`, but returns the result or raises `PromptEngine.Error`.

      %{n: 1} = PromptEngine.echo!(n: 1)
  """
  @spec echo!(args(), opts()) :: map()
  def echo!(args, opts \\ []), do: bang(fn -> echo(args, opts) end)

  # -- plumbing -----------------------------------------------------------------

  # An op with fixed arguments; options that are not call options become arguments too.
  defp op(op, args, opts, extra_copts \\ []) do
    with {:ok, copts, extra} <- split_opts(opts, op) do
      request(op, Map.merge(extra, args), Keyword.merge(copts, extra_copts))
    end
  end

  defp request(op, args, copts) do
    with_instance(op, copts, fn name, config ->
      timeout = Keyword.get(copts, :timeout, config.timeout)
      deadline = System.monotonic_time(:millisecond) + timeout
      call_until(name, op, encode(args), Keyword.put(copts, :timeout, timeout), deadline)
    end)
  end

  # While the sidecar is being restarted its connection is not registered: wait for it
  # (within the call's own deadline) instead of failing at once.
  defp call_until(name, op, args, opts, deadline) do
    case PromptEngine.Supervisor.pick(name, Keyword.get(opts, :route_key)) do
      nil ->
        retry_or(name, op, args, opts, deadline)

      conn ->
        left = deadline - System.monotonic_time(:millisecond)

        case Connection.request(conn, op, args, Keyword.put(opts, :timeout, max(left, 0))) do
          {:error, %Error{reason: :unavailable, details: :restarting}} -> retry_or(name, op, args, opts, deadline)
          other -> other
        end
    end
  end

  defp retry_or(name, op, args, opts, deadline) do
    if System.monotonic_time(:millisecond) + 20 < deadline do
      Process.sleep(20)
      call_until(name, op, args, opts, deadline)
    else
      {:error, Error.new(:unavailable, "no sidecar of instance #{inspect(name)} was running within the call's timeout (#{opts[:timeout]} ms); it is being restarted", op: op)}
    end
  end

  defp on_every_sidecar(op, opts, combine) do
    with {:ok, copts, _extra} <- split_opts(opts, op) do
      with_instance(op, copts, fn name, config ->
        timeout = Keyword.get(copts, :timeout, config.timeout)

        PromptEngine.Supervisor.connections(name)
        |> Enum.map(fn conn -> Task.async(fn -> Connection.request(conn, op, %{}, timeout: timeout) end) end)
        |> Task.await_many(timeout + 6_000)
        |> combine.()
      end)
    end
  end

  # Resolves the instance (fast :no_instance for a name never started) and runs `fun`
  # inside the telemetry span; nothing in it may raise into the caller.
  defp with_instance(op, copts, fun) do
    name = Keyword.get(copts, :name, __MODULE__)

    case PromptEngine.Supervisor.config(name) do
      nil -> no_instance(name, op)
      config -> span(op, name, config, fn -> fun.(name, config) end)
    end
  end

  defp span(op, name, config, fun) do
    # A bang variant asks for the error to be raised inside the span (so :exception is
    # emitted); the flag is taken here so that nested calls do not see it.
    raise? = Process.delete(@bang_key) == true
    telemetry? = config.telemetry
    meta = %{op: op, instance: name}
    t0 = System.monotonic_time()
    if telemetry?, do: :telemetry.execute([:prompt_engine, :request, :start], %{system_time: System.system_time(), monotonic_time: t0}, meta)

    try do
      result = fun.()
      if raise?, do: raise_error(result)

      if telemetry? do
        t1 = System.monotonic_time()
        {outcome, error} = outcome(result)
        :telemetry.execute([:prompt_engine, :request, :stop], %{duration: t1 - t0, monotonic_time: t1}, Map.merge(meta, %{result: outcome, reason: error && error.reason, error: error}))
      end

      result
    catch
      kind, reason ->
        stacktrace = __STACKTRACE__

        if telemetry? do
          t1 = System.monotonic_time()
          :telemetry.execute([:prompt_engine, :request, :exception], %{duration: t1 - t0, monotonic_time: t1}, Map.merge(meta, %{kind: kind, reason: reason, stacktrace: stacktrace}))
        end

        if raise?,
          do: :erlang.raise(kind, reason, stacktrace),
          else: {:error, Error.new(:internal, "prompt-engine client failure: " <> Exception.format_banner(kind, reason, stacktrace), op: op, details: reason)}
    end
  end

  defp outcome({:error, %Error{} = e}), do: {:error, e}
  defp outcome(_), do: {:ok, nil}

  defp raise_error({:error, %Error{} = e}), do: raise(e)
  defp raise_error(_), do: :ok

  defp bang(fun) do
    Process.put(@bang_key, true)

    try do
      case fun.() do
        :ok -> :ok
        {:ok, value} -> value
        {:error, %Error{} = e} -> raise e
      end
    after
      Process.delete(@bang_key)
    end
  end

  defp no_instance(name, op) do
    {:error,
     Error.new(:no_instance, "no instance named #{inspect(name)} is running: start it with {PromptEngine, name: #{inspect(name)}} in your supervision tree, or pass the name: of one that is",
       op: op
     )}
  end

  defp bad(op, message), do: {:error, Error.new(:bad_request, if(op, do: "#{op}: #{message}", else: message), op: op)}

  defp instance_name(name, _op) when is_atom(name) and name not in [nil, true, false], do: {:ok, name}

  defp instance_name(opts, op) do
    with {:ok, kw} <- keyword(opts, op) do
      case Keyword.get(kw, :name, __MODULE__) do
        name when is_atom(name) and name not in [nil, true, false] -> {:ok, name}
        other -> bad(op, "name: expected an instance name (an atom), got #{inspect(other, limit: 10)}")
      end
    end
  end

  defp instance_name!(x) do
    case instance_name(x, nil) do
      {:ok, name} -> name
      _ -> x
    end
  end

  # Options: a keyword list or a map, as a list of pairs.
  defp keyword(opts, op) do
    cond do
      is_map(opts) and not is_struct(opts) -> {:ok, Map.to_list(opts)}
      is_list(opts) and Keyword.keyword?(opts) -> {:ok, opts}
      true -> bad(op, "options: expected a keyword list or a map, got #{inspect(opts, limit: 10)}")
    end
  end

  # Splits call options (checked here) from the op's own arguments.
  defp split_opts(opts, op) do
    with {:ok, pairs} <- keyword(opts, op) do
      {copts, extra} = Enum.split_with(pairs, fn {k, _} -> k in @call_opts end)

      Enum.find_value(copts, {:ok, copts, Map.new(extra)}, fn
        {:name, n} when not is_atom(n) or n in [nil, true, false] -> bad(op, "name: expected an instance name (an atom), got #{inspect(n, limit: 10)}")
        {:timeout, t} when not is_integer(t) or t < 0 -> bad(op, "timeout: expected a non-negative integer (ms), got #{inspect(t, limit: 10)}")
        {:queue, q} when not is_boolean(q) -> bad(op, "queue: expected a boolean, got #{inspect(q, limit: 10)}")
        _ -> nil
      end)
    end
  end

  # A map argument: a map or a keyword list.
  defp args_map(%_{} = s, op, what), do: bad(op, "#{what}: expected a map or a keyword list, got #{inspect(s, limit: 10)}")
  defp args_map(m, _op, _what) when is_map(m), do: {:ok, m}

  defp args_map(l, op, what) when is_list(l) do
    if Keyword.keyword?(l), do: {:ok, Map.new(l)}, else: bad(op, "#{what}: expected a map or a keyword list, got #{inspect(l, limit: 10)}")
  end

  defp args_map(other, op, what), do: bad(op, "#{what}: expected a map or a keyword list, got #{inspect(other, limit: 10)}")

  @doc false
  # Terms as the sidecar takes them: times as ISO 8601 text (what its timestamp fields
  # accept, besides unix ms), keyword lists as maps; everything else unchanged.
  @spec encode(term()) :: term()
  def encode(%DateTime{} = t), do: DateTime.to_iso8601(t)
  # A naive time has no zone; the sidecar would read it as its own local time, so say UTC.
  def encode(%NaiveDateTime{} = t), do: NaiveDateTime.to_iso8601(t) <> "Z"
  def encode(%Date{} = d), do: Date.to_iso8601(d)
  def encode(%_{} = s), do: s
  def encode(m) when is_map(m), do: Map.new(m, fn {k, v} -> {k, encode(v)} end)

  def encode([{k, _} | _] = l) when is_atom(k) do
    if Keyword.keyword?(l), do: Map.new(l, fn {k, v} -> {k, encode(v)} end), else: encode_list(l)
  end

  def encode(l) when is_list(l), do: encode_list(l)
  def encode(t) when is_tuple(t), do: t |> Tuple.to_list() |> Enum.map(&encode/1) |> List.to_tuple()
  def encode(x), do: x

  defp encode_list([h | t]), do: [encode(h) | encode_list(t)]
  defp encode_list([]), do: []
  defp encode_list(improper_tail), do: encode(improper_tail)
end
