defmodule PromptEngine do
  @moduledoc """
  Elixir client for the prompt-engine sidecar: prompt optimization (COPRO),
  prompt assembly from templates, execution tracking, a learned scorer and
  the closed loop, served by a Node process behind an Erlang Port — so a
  crash there can never take your VM down.

  This module holds the public API and its documentation; each function is
  one line over the plumbing: `PromptEngine.Args` (options and argument
  shapes), `PromptEngine.Request` (the call path, routing, tracking ids),
  `PromptEngine.Telemetry` (events). `PromptEngine.Supervisor` owns an
  instance, `PromptEngine.Connection` one sidecar, `PromptEngine.LogRelay`
  its logs.

  Add it to your supervision tree:

      children = [
        {PromptEngine, database_url: "postgres://..."}
      ]

  (installing it as a path or git dependency, `mix release`, `config/runtime.exs`
  settings: `docs/deploying.md` in the repository), then call it from anywhere:

      {:ok, %{prompt: prompt}} = PromptEngine.generate_prompt("a billing service", "elixir")
      {:ok, %{optimized_prompt: better}} = PromptEngine.optimize_prompt(prompt)

  Starting returns once every sidecar has completed its ready handshake, and
  a sidecar is ready only when its store is open and its scorer loaded: the
  first `choose_prompt/4`, `score/3` and `track_execution/2` are answered
  within the default timeout.

  ## One calling convention

  The instance is always the `name:` option (default `PromptEngine`), never
  a positional argument: `choose_prompt("triage", base, ctx, name: MyApp.Prompts)`.
  Every function's last argument is its options, a keyword list or a map:
  `:name`, `:timeout` (ms; default the instance's `timeout:`, 5000) and
  `:queue` (wait for a slot when overloaded), plus the op's own options.
  An option a function does not take is a `:bad_request` naming the known
  ones and the closest (`"execution_time: unknown option of report_outcome
  (did you mean execution_time_ms?); known: ..."`), as the sidecar does for
  op arguments.

  ## Results and errors

  Every function returns `{:ok, result}` (or `:ok`) or
  `{:error, %PromptEngine.Error{reason: atom, message: binary}}`, and never
  raises or exits in your process because of the sidecar or of a wrong
  argument. Each has a bang variant (`health!/1`, `choose_prompt!/4`, ...)
  that returns the result or raises the `PromptEngine.Error`. Reasons:

    * `:bad_request` — an argument or option was wrong; the message names it
      (the client checks shapes and option names, the sidecar checks values)
    * `:unknown_op`, `:not_found`, `:unavailable`, `:llm_error`, ... — the op's own errors
    * `:timeout` — no reply within `:timeout` ms; the work is cancelled in the sidecar
    * `:overloaded` — too many requests in flight (`:max_in_flight`); pass `queue: true` to wait instead
    * `:sidecar_exited` — the sidecar died mid-request (`details`: exit status); it is restarted
    * `:unavailable` — the sidecar is being restarted and is not up within the call's timeout;
      the message says how many restarts and the last exit status
    * `:no_instance` — no instance of that `name:` is running: never started,
      stopped, or failed to start (the message says which; answered at once)

  ## Tracking entries are stored once, retries included

  Every tracking entry (`track_*`, `report_outcome/3`) gets an `id` (a random
  UUID) unless you give one; the sidecar stores an id once. A tracking call
  whose sidecar dies mid-request is sent again with the same id while its
  timeout allows, and when it still fails, retrying the same call with the
  same arguments from the same process reuses its id (remembered for 10
  minutes): a retry after `:sidecar_exited` or `:timeout` never stores an
  entry twice.

  ## Arguments

  Every argument that is a map may be given as a keyword list. Before
  sending, `DateTime` and `NaiveDateTime` values anywhere in the arguments
  become ISO 8601 strings (a `NaiveDateTime` is taken as UTC: `"...Z"`),
  `Date` values `"YYYY-MM-DD"`, and keyword lists become maps — the forms the
  sidecar's tracking ops accept for `timestamp`, `evolution_timestamp`,
  `test_timestamp` and `created_at`. Metadata values (strings, numbers,
  booleans) are sent as they are.

  ## Events, telemetry, logs

  `subscribe/1` delivers the sidecar's events to the calling process as
  `{:prompt_engine_event, name, payload}`, e.g. `:template_updated` and
  `:model_trained`. `PromptEngine.Telemetry` lists the `:telemetry` events
  (requests, and each sidecar's start, exit, restart). The sidecar's log
  lines reach `Logger`; see `PromptEngine.LogRelay`.
  """

  alias PromptEngine.{Args, Request}

  @before_compile PromptEngine.Bang

  @typedoc "Options, as a keyword list or a map: `:name`, `:timeout` (ms), `:queue` (boolean), and the function's own."
  @type opts :: keyword() | map()
  @typedoc "A map of arguments, or the same as a keyword list."
  @type args :: map() | keyword()
  @type error :: {:error, PromptEngine.Error.t()}
  @type result :: {:ok, map()} | error()

  # -- supervision ------------------------------------------------------------

  @doc """
  A child spec for your supervision tree. Options (a keyword list or a map),
  checked when the instance starts; an unknown option or a wrong type makes
  the start fail with `%PromptEngine.Error{reason: :bad_option}` naming it:

    * `:name` — instance name (default `PromptEngine`); pass it as `name:` to every call
    * `:pool_size` — number of sidecar processes (default 1); requests are spread across
      the ready ones round-robin, and a choice, its outcome and the experiment's state go
      to the same one (by experiment name). More than 1 needs a PostgreSQL shared by all
      (`:database_url`): with the embedded PGlite the start is refused.
    * `:executable` — the sidecar: a `.js` entry run with Node, or an executable file
      (default: `priv/sidecar/dist/port/main.js` of this application, resolved at run time;
      also `config :prompt_engine, executable: ...`)
    * `:node` — the Node binary, checked to be >= 20 at start (default: `node` on the `PATH`;
      also `config :prompt_engine, node: ...`)
    * `:data_dir` — this instance's data directory; sidecar i of the pool uses `<data_dir>/<i>`
      (default: under the app's build path, or `$RELEASE_ROOT` in a release; see `PromptEngine.Sidecar`)
    * `:database_url` — PostgreSQL for tracking (default: the VM's `DATABASE_URL`, else PGlite
      in `data_dir`); never printed: see `PromptEngine.Redact`
    * `:schema` — the PostgreSQL schema the sidecar keeps its tables in (passed as
      `PROMPT_ENGINE_DB_SCHEMA`; unset: the sidecar's default, `prompt_engine`; also
      `config :prompt_engine, schema: ...`)
    * `:dashboard` — `[port: 4050, host: "127.0.0.1", token: "..."]`: the pool's first
      sidecar serves the dashboard page there (`PROMPT_ENGINE_DASHBOARD`,
      `PROMPT_ENGINE_DASHBOARD_TOKEN`; without a token it is read-only)
    * `:args` — its arguments (default `["--port-fds"]`)
    * `:env` — environment for it, e.g. `[{"NATS_URL", url}, {"LOG_LEVEL", "warn"}]`; applied last
    * `:timeout` — default per-call timeout in ms (5000)
    * `:max_in_flight` — per sidecar (10_000)
    * `:sync_start` — `true` (default): the start returns once every sidecar is ready, or
      fails with the first one's error; `false`: it returns at once and early calls wait
      for the handshake within their own timeout
    * `:ready_timeout` — how long a sidecar may take to start (60_000 ms)
    * `:backoff_initial`, `:backoff_max` — a sidecar that exits is restarted after
      `backoff_initial` ms (100), doubling on every restart in a row up to `backoff_max`
      (10_000 ms)
    * `:max_restarts` — restarts in a row before a connection gives up (default `:infinity`:
      never, while the instance lives)
    * `:capture_stderr` — route the sidecar's logs to `Logger` (default `true`)

  Example:

      children = [{PromptEngine, name: MyApp.Prompts, database_url: url, pool_size: 2}]
      Supervisor.start_link(children, strategy: :one_for_one)
  """
  @spec child_spec(keyword() | map()) :: Supervisor.child_spec()
  def child_spec(opts) do
    name = if is_map(opts), do: Map.get(opts, :name, __MODULE__), else: (Keyword.keyword?(opts) && Keyword.get(opts, :name)) || __MODULE__
    %{id: {__MODULE__, name}, start: {PromptEngine.Supervisor, :start_link, [PromptEngine.Supervisor.seal(opts)]}, type: :supervisor}
  end

  @doc """
  Start an instance outside a supervision tree (tests, scripts). Prefer
  `child_spec/1`. Takes the options of `child_spec/1`; returns once the
  sidecars are ready, or `{:error, %PromptEngine.Error{}}` with the error
  that stopped the first one (like any `start_link`, a failed start also
  exits the linked caller unless it traps exits).

      {:ok, sup} = PromptEngine.start_link(name: Scratch)
      {:error, %PromptEngine.Error{reason: :bad_option}} = PromptEngine.start_link(pool: 1)
  """
  @spec start_link(keyword() | map()) :: Supervisor.on_start() | error()
  def start_link(opts \\ []), do: PromptEngine.Supervisor.start_link(PromptEngine.Supervisor.seal(opts))

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
  instance's sidecars. Options: `:name`, `:timeout` (accepted for uniformity;
  subscribing sends nothing).

      :ok = PromptEngine.subscribe()
      receive do
        {:prompt_engine_event, :template_updated, %{template_name: name}} -> name
      end
  """
  @spec subscribe(opts()) :: :ok | error()
  def subscribe(opts \\ []), do: Request.subscribe(opts, :subscribe)

  @doc """
  Stop receiving the instance's events. Options as for `subscribe/1`.

      :ok = PromptEngine.unsubscribe()
  """
  @spec unsubscribe(opts()) :: :ok | error()
  def unsubscribe(opts \\ []), do: Request.subscribe(opts, :unsubscribe)

  # -- the generic call ---------------------------------------------------------

  @doc """
  Call any op by name with its arguments (a map or a keyword list). The
  functions below are thin wrappers over this one; options other than
  `:name`, `:timeout` and `:queue` are arguments of the op too (checked
  against its arguments when the op is known).

      {:ok, %{prompts: _}} = PromptEngine.call(:prompt_stats, %{prompt_id: "p1"})
      {:error, %PromptEngine.Error{reason: :unknown_op}} = PromptEngine.call(:nope)
  """
  @spec call(atom(), args(), opts()) :: :ok | {:ok, term()} | error()
  def call(op, args \\ %{}, opts \\ []), do: Request.generic(op, args, opts)

  # -- ops (names and shapes of the old NIF are kept) ---------------------------

  @doc """
  Assemble a prompt from a template for `context` (text or a map) in
  `language`. Options: `:template_id`, `:trigger_type`, `:trigger_value`, `:category`, `:strict`.

      {:ok, %{prompt: prompt, template_used: _}} = PromptEngine.generate_prompt("migrate the ledger", "elixir")
  """
  @spec generate_prompt(String.t() | args(), String.t(), opts()) :: result()
  def generate_prompt(context, language, opts \\ []), do: Request.run(:generate_prompt, %{context: context, language: language}, opts)

  @doc """
  Optimize a prompt with COPRO. Options: `:context`, `:language`, `:breadth`,
  `:depth`, `:temperature`, `:devset`, `:llm`, `:budget`, `:cache`, `:template_id`.

      {:ok, %{optimized_prompt: better, optimization_score: score}} =
        PromptEngine.optimize_prompt("Write a {{language}} parser.", breadth: 4, depth: 1, timeout: 30_000)
  """
  @spec optimize_prompt(String.t(), opts()) :: result()
  def optimize_prompt(prompt, opts \\ []), do: Request.run(:optimize_prompt, %{prompt: prompt}, opts)

  @doc """
  One chat completion on the configured OpenAI-compatible endpoint. Options
  other than `:name`, `:timeout` and `:queue` go to the completion:
  `:temperature`, `:max_tokens`, `:top_p`, `:llm` (the endpoint).

      {:ok, %{text: text}} = PromptEngine.call_llm("gpt-4o-mini", [%{role: "user", content: "hi"}], temperature: 0.2)
  """
  @spec call_llm(String.t(), [map() | keyword()], opts()) :: result()
  def call_llm(model, messages, opts \\ []), do: Request.run(:call_llm, %{model: model, messages: messages}, opts, into: :options)

  # Each sidecar of a pool has its own cache: a key is always routed to the same one,
  # and clear/stats go to all of them.

  @doc """
  Look a key up in the sidecar's cache (as the NIF: `cache_get(key)`).

      {:ok, %{found: true, value: %{text: "hello"}}} = PromptEngine.cache_get("greeting")
      {:ok, %{found: false}} = PromptEngine.cache_get("nothing here")
  """
  @spec cache_get(String.t(), opts()) :: result()
  def cache_get(key, opts \\ []), do: Request.run(:cache_get, %{key: key}, opts)

  @doc """
  Store a value (any term) under a key in the sidecar's cache (as the NIF: `cache_put(key, value)`).

      :ok = PromptEngine.cache_put("greeting", %{text: "hello"})
  """
  @spec cache_put(String.t(), term(), opts()) :: :ok | error()
  def cache_put(key, value, opts \\ []), do: Request.run(:cache_put, %{key: key, value: value}, opts)

  @doc """
  Empty the cache of every sidecar of the instance (as the NIF: `cache_clear()`).

      :ok = PromptEngine.cache_clear()
  """
  @spec cache_clear(opts()) :: :ok | error()
  def cache_clear(opts \\ []), do: Request.every(:cache_clear, opts, fn results -> Enum.find(results, :ok, &(&1 != :ok)) end)

  @doc """
  Cache figures summed over the pool's sidecars, `hit_rate` recomputed from
  the sums (as the NIF: `cache_stats()`).

      {:ok, %{total_entries: n, hits: _, misses: _, hit_rate: _}} = PromptEngine.cache_stats()
  """
  @spec cache_stats(opts()) :: result()
  def cache_stats(opts \\ []), do: Request.every(:cache_stats, opts, &Request.sum_cache_stats/1)

  @doc """
  Record a PromptExecutionEntry; returns `{:ok, %{id: id}}` once the row is
  durable. `timestamp` may be a `DateTime`, a `NaiveDateTime` (UTC), an ISO
  8601 string or unix milliseconds; it defaults to now. An entry whose
  `metadata` names an `"experiment"` goes to the sidecar serving that
  experiment. Its `id` is made here unless given (see "Tracking entries are
  stored once" above).

      {:ok, %{id: id}} =
        PromptEngine.track_execution(prompt_id: "p1", execution_time_ms: 120, success: true, timestamp: DateTime.utc_now())
  """
  @spec track_execution(args(), opts()) :: result()
  def track_execution(entry, opts \\ []), do: Request.track(:track_execution, entry, opts)

  @doc """
  Record feedback on a prompt (`feedback_type`, `rating`, `comment`, `user_id`, `timestamp`, `context`).

      {:ok, %{id: _}} = PromptEngine.track_feedback(prompt_id: "p1", feedback_type: :quality, rating: 5)
  """
  @spec track_feedback(args(), opts()) :: result()
  def track_feedback(entry, opts \\ []), do: Request.track(:track_feedback, entry, opts)

  @doc """
  Record that one prompt evolved into another (`evolution_timestamp` as for `track_execution/2`).

      {:ok, %{id: _}} =
        PromptEngine.track_evolution(original_prompt_id: "p1", evolved_prompt_id: "p2", evolution_type: :refinement, performance_improvement: 0.1)
  """
  @spec track_evolution(args(), opts()) :: result()
  def track_evolution(entry, opts \\ []), do: Request.track(:track_evolution, entry, opts)

  @doc """
  Record the result of an A/B test (`test_timestamp` as for `track_execution/2`).

      {:ok, %{id: _}} =
        PromptEngine.track_ab_result(test_id: "t", variant_a_prompt_id: "p1", variant_b_prompt_id: "p2", winner: :a,
          confidence_level: 0.9, sample_size: 10, test_duration: 1000)
  """
  @spec track_ab_result(args(), opts()) :: result()
  def track_ab_result(entry, opts \\ []), do: Request.track(:track_ab_result, entry, opts)

  @doc """
  Record a project's context signature (`created_at` as for `track_execution/2`).

      {:ok, %{id: _}} =
        PromptEngine.track_context_signature(signature_hash: "s", project_tech_stack: ["elixir"], project_type: "web", complexity_level: "low")
  """
  @spec track_context_signature(args(), opts()) :: result()
  def track_context_signature(entry, opts \\ []), do: Request.track(:track_context_signature, entry, opts)

  @doc """
  Query the tracking store: `kind` is one of `:by_id, :similar, :by_tech_stack,
  :prompt_executions, :recent_feedback, :evolution_history, :high_performance`.
  At most `limit:` rows (10,000) and 16 MiB of their text come back; past
  that, `{:error, %PromptEngine.Error{reason: :bad_request}}` says how many
  rows fit.

      {:ok, %{rows: rows}} = PromptEngine.query(:prompt_executions, prompt_id: "p1", limit: 10)
  """
  @spec query(atom() | String.t(), args(), opts()) :: result()
  def query(kind, args \\ %{}, opts \\ []), do: Request.with_map(args, :query, "arguments", &Request.run(:query, Map.put(&1, :kind, kind), opts))

  @doc """
  Train a new scorer on the tracked history. Options: `:min_samples`, `:epochs`, `:holdout`, `:seed`.

      {:ok, %{auc: auc, promoted: promoted?}} = PromptEngine.train(min_samples: 50, timeout: 120_000)
  """
  @spec train(opts()) :: result()
  def train(opts \\ []), do: Request.run(:train, %{}, opts)

  @doc """
  P(success) of a prompt (or a list of prompts) in a context (a map or a keyword list).

      {:ok, %{score: p}} = PromptEngine.score("Classify the ticket.", %{model: "gpt-4o-mini"})
      {:ok, %{scores: [_, _]}} = PromptEngine.score(["A", "B"], model: "gpt-4o-mini")
  """
  @spec score(String.t() | [String.t()], args(), opts()) :: result()
  def score(prompts, context \\ %{}, opts \\ []),
    do:
      Request.with_map(
        context,
        :score,
        "context",
        &Request.run(:score, Map.put(%{context: &1}, if(is_list(prompts), do: :prompts, else: :prompt), prompts), opts)
      )

  @doc """
  A template by id.

      {:ok, %{template: %{template_name: "sparc_completion"}}} = PromptEngine.get_template("sparc_completion")
  """
  @spec get_template(String.t(), opts()) :: result()
  def get_template(template_id, opts \\ []), do: Request.run(:get_template, %{template_id: template_id}, opts)

  @doc """
  Search templates by text. Options other than `:name`, `:timeout` and
  `:queue` are search options: `:limit`, `:template_type`, `:language`.

      {:ok, %{templates: found}} = PromptEngine.search_templates("phoenix", limit: 5)
  """
  @spec search_templates(String.t(), opts()) :: result()
  def search_templates(query, opts \\ []), do: Request.run(:search_templates, %{query: query}, opts, as: :search_templates, into: :opts)

  @doc """
  Store a template (a map or a keyword list).

      {:ok, %{stored: _}} = PromptEngine.store_template(template_name: "greet", template_content: "Hello {{name}}", template_type: "command")
  """
  @spec store_template(args(), opts()) :: result()
  def store_template(template, opts \\ []), do: Request.with_map(template, :store_template, "template", &Request.run(:store_template, %{template: &1}, opts))

  @doc """
  Render a template with variables (a map or a keyword list). Option
  `strict: true` fails naming every missing variable.

      {:ok, %{prompt: text}} = PromptEngine.render_template("ex_rules", %{"context" => "go"})
      {:error, %PromptEngine.Error{reason: :bad_request}} = PromptEngine.render_template("service_blueprint", %{}, strict: true)
  """
  @spec render_template(String.t(), args(), opts()) :: result()
  def render_template(template_id, variables, opts \\ []),
    do: Request.with_map(variables, :render_template, "variables", &Request.run(:render_template, %{template_id: template_id, variables: &1}, opts))

  @doc """
  The prompt of a SPARC phase (`"specification"`, `"pseudocode"`, ...) with variables.

      {:ok, %{prompt: spec}} = PromptEngine.get_sparc_prompt("specification", %{"language" => "elixir"})
  """
  @spec get_sparc_prompt(String.t(), args(), opts()) :: result()
  def get_sparc_prompt(name, variables \\ %{}, opts \\ []),
    do: Request.with_map(variables, :get_sparc_prompt, "variables", &Request.run(:get_sparc_prompt, %{name: name, variables: &1}, opts))

  @doc """
  Every template the sidecar knows. Options: `:limit`, `:template_type`.

      {:ok, %{templates: templates}} = PromptEngine.list_templates()
  """
  @spec list_templates(opts()) :: result()
  def list_templates(opts \\ []), do: Request.run(:list_templates, %{}, opts)

  @doc """
  Choose an A/B variant by Thompson sampling over tracked outcomes. Option
  `:key` makes the choice sticky per key.

      {:ok, %{variant: v}} = PromptEngine.select_variant("greeting_test", ["p1", "p2"], key: "user-42")
  """
  @spec select_variant(String.t(), [String.t()], opts()) :: result()
  def select_variant(test_id, variants, opts \\ []), do: Request.run(:select_variant, %{test_id: test_id, variants: variants}, opts)

  # -- the closed loop ------------------------------------------------------------

  @doc """
  The prompt to use now for `experiment` (its name: a string), keyed by
  experiment and `context.model`: the engine serves the base, proposes and
  tries variants, learns from the outcomes you report with
  `report_outcome/3`, and serves better prompts over time, with guardrails.

  `base` is the prompt text, or `%{template_id: id, variables: map}` to
  render a template; `context` is a map or a keyword list. In a pool, every
  call for one experiment goes to the same sidecar.

      {:ok, choice} = PromptEngine.choose_prompt("ticket_triage", base_prompt, %{model: "gpt-4o-mini"})
      # run choice.prompt on the model, judge the answer
      :ok = PromptEngine.report_outcome(choice, true)

      # another instance, a longer timeout
      {:ok, choice} = PromptEngine.choose_prompt("ticket_triage", base_prompt, %{model: "gpt-4o-mini"}, name: MyApp.Prompts, timeout: 10_000)
  """
  @spec choose_prompt(String.t(), String.t() | map(), args(), opts()) :: result()
  def choose_prompt(experiment, base, context \\ %{}, opts \\ []),
    do: Request.with_args(Args.choose(experiment, base, context), &Request.run(:choose_prompt, &1, opts))

  @doc """
  Report how a chosen prompt did. `outcome` is whether the answer was good
  (a boolean), or a map of what was measured: `:success` (boolean), `:score`
  (0.0..1.0, e.g. a judge's score), `:latency_ms`, `:input_tokens`,
  `:output_tokens`, `:cost` — every key optional but one of `:success` and
  `:score`. The experiment's objective decides what counts
  (docs/closed-loop.md). It is an ordinary `track_execution/2` carrying the
  choice's prompt id and metadata, sent to the sidecar that made the choice.
  Options `:execution_time_ms` (default 0), `:confidence_score`,
  `:response_length`, `:metadata` (merged into the choice's), `:timestamp`,
  `:context_signature`, `:id`.

      {:ok, choice} = PromptEngine.choose_prompt("ticket_triage", base_prompt, %{model: "gpt-4o-mini"})
      :ok = PromptEngine.report_outcome(choice, true, execution_time_ms: 850)
      :ok = PromptEngine.report_outcome(choice, %{score: 0.8, latency_ms: 850, input_tokens: 312, output_tokens: 40, cost: 0.0021})
  """
  @spec report_outcome(map(), boolean() | map(), opts()) :: :ok | error()
  def report_outcome(choice, success?, opts \\ []), do: Request.report_outcome(choice, success?, opts)

  @doc """
  A closed-loop experiment (its name: a string; `nil` lists every
  experiment in brief): variants, outcomes, posteriors, P(best), leader.
  Options: `:model`, `:action` (`:pin`, `:unpin`, `:reset`, `:stop`, `:resume`, `:objective`),
  `:prompt_id`, `:force`, `:objective`, `:generation` (act only while the experiment is at
  this generation, else `:conflict`: a `:reset` retried after `:unavailable` never starts
  two generations), `:history`.

      {:ok, %{experiments: [exp]}} = PromptEngine.experiment("ticket_triage")
      exp.improvement
  """
  @spec experiment(String.t() | nil, opts()) :: result()
  def experiment(name, opts \\ []), do: Request.experiment(name, opts)

  @doc """
  The sidecar's health: `status`, `version`, `os_pid`, `in_flight`, checks of the database and NATS.

      {:ok, %{status: "ok", os_pid: pid}} = PromptEngine.health()
      {:error, %PromptEngine.Error{reason: :no_instance}} = PromptEngine.health(name: NotStarted)
  """
  @spec health(opts()) :: result()
  def health(opts \\ []), do: Request.run(:health, %{}, opts)

  @doc """
  The sidecar's counters: uptime, per-op calls, errors and latency, services.

      {:ok, %{uptime_ms: up, ops: ops}} = PromptEngine.stats()
  """
  @spec stats(opts()) :: result()
  def stats(opts \\ []), do: Request.run(:stats, %{}, opts)

  @doc """
  Returns its arguments unchanged (latency checks); `delay_ms:` delays the reply.

      {:ok, %{n: 1}} = PromptEngine.echo(%{n: 1})
  """
  @spec echo(args(), opts()) :: result()
  def echo(args, opts \\ []), do: Request.with_map(args, :echo, "arguments", &Request.run(:echo, &1, opts))
end
