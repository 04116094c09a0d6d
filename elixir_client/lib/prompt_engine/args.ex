defmodule PromptEngine.Args do
  # Owns what the public functions accept before anything is sent: the options each
  # function takes (call options plus the op's own arguments, from the op table through
  # the generated PromptEngine.Atoms), unknown options refused with the known ones and a
  # close match in the sidecar's wording, argument shapes, the arguments of the closed
  # loop's two functions, tracking ids, and the encoding of times and keyword lists.
  @moduledoc false

  # The longest timeout (ms) anything takes: Erlang's timers go to 2^32 - 1 ms, and a call's
  # backstop waits 5 s past its timeout.
  @max_timeout 4_294_967_295 - 5_000

  @doc false
  @spec max_timeout() :: pos_integer()
  def max_timeout, do: @max_timeout

  @doc false
  # What is wrong with a call's timeout, if anything (every call and Connection.request/4 say it alike).
  @spec timeout_problem(term()) :: String.t() | nil
  def timeout_problem(t) when is_integer(t) and t >= 0 and t <= @max_timeout, do: nil
  def timeout_problem(t), do: "timeout: expected a non-negative integer (ms) of at most #{@max_timeout}, got #{inspect(t, limit: 10)}"

  alias PromptEngine.Error

  @call_opts [:name, :timeout, :queue]

  # public function => where its options come from:
  #   {:op, op, args it takes positionally}  call options + the op's other arguments (the op table)
  #   {:nested, op, arg}                      call options + the keys of the op's map argument `arg`
  #   {:also, names}                          call options + these
  #   {:only, names}                          exactly these
  @functions %{
    generate_prompt: {:op, :generate_prompt, [:context, :language]},
    optimize_prompt: {:op, :optimize_prompt, [:prompt]},
    call_llm: {:nested, :call_llm, :options},
    cache_get: {:op, :cache_get, [:key]},
    cache_put: {:op, :cache_put, [:key, :value]},
    cache_clear: {:op, :cache_clear, []},
    cache_stats: {:op, :cache_stats, []},
    track_execution: {:op, :track_execution, []},
    track_feedback: {:op, :track_feedback, []},
    track_evolution: {:op, :track_evolution, []},
    track_ab_result: {:op, :track_ab_result, []},
    track_context_signature: {:op, :track_context_signature, []},
    query: {:op, :query, [:kind]},
    train: {:op, :train, []},
    score: {:op, :score, [:prompt, :prompts, :context]},
    get_template: {:op, :get_template, [:template_id]},
    # search options go to the op's `opts` map (its doc names these; central_cloud takes them as they are)
    search_templates: {:also, [:template_type, :language, :limit]},
    store_template: {:op, :store_template, [:template]},
    render_template: {:op, :render_template, [:template_id, :variables]},
    get_sparc_prompt: {:op, :get_sparc_prompt, [:name, :variables]},
    list_templates: {:op, :list_templates, []},
    select_variant: {:op, :select_variant, [:test_id, :variants]},
    choose_prompt: {:op, :choose_prompt, [:experiment, :prompt, :template_id, :variables, :context]},
    report_outcome: {:also, [:execution_time_ms, :confidence_score, :response_length, :metadata, :timestamp, :id, :context_signature]},
    experiment: {:op, :experiment, [:experiment, :name]},
    health: {:op, :health, []},
    stats: {:op, :stats, []},
    echo: {:op, :echo, []},
    subscribe: {:only, [:name, :timeout]},
    unsubscribe: {:only, [:name, :timeout]}
  }

  @known (for {fun, spec} <- @functions, into: %{} do
            table = fn op -> PromptEngine.Atoms.args(op) || raise(CompileError, description: "#{op} is not in the op table (PromptEngine.Atoms)") end

            names =
              case spec do
                {:op, op, positional} -> @call_opts ++ (elem(table.(op), 0) -- positional)
                {:nested, op, arg} -> @call_opts ++ Keyword.fetch!(elem(table.(op), 2), arg)
                {:also, names} -> @call_opts ++ names
                {:only, names} -> names
              end

            {fun, Enum.sort(Enum.uniq(names))}
          end)

  @doc false
  # The options `fun` takes (call options first). For call/3: those of `op` when the table knows it.
  @spec known(atom(), atom() | nil) :: [atom()] | :any
  def known(fun, op \\ nil)

  def known(:call, op) do
    case PromptEngine.Atoms.args(op) do
      {_args, true, _} -> :any
      {args, false, _} -> Enum.sort(Enum.uniq(@call_opts ++ args))
      nil -> :any
    end
  end

  def known(fun, _op), do: Map.fetch!(@known, fun)

  @doc false
  # Check `opts` (a keyword list or a map) for `fun`: {:ok, call options, the other options as a map}.
  @spec options(term(), atom(), atom() | nil) :: {:ok, keyword(), map()} | {:error, Error.t()}
  def options(opts, fun, op \\ nil) do
    with {:ok, pairs} <- pairs(opts, fun),
         :ok <- unknown(pairs, known(fun, op), fun) do
      {copts, extra} = Enum.split_with(pairs, fn {k, _} -> k in @call_opts end)

      Enum.find_value(copts, {:ok, copts, Map.new(extra)}, fn
        {:name, n} when not is_atom(n) or n in [nil, true, false] -> bad(fun, "name: expected an instance name (an atom), got #{inspect(n, limit: 10)}")
        {:timeout, t} -> if problem = timeout_problem(t), do: bad(fun, problem)
        {:queue, q} when not is_boolean(q) -> bad(fun, "queue: expected a boolean, got #{inspect(q, limit: 10)}")
        _ -> nil
      end)
    end
  end

  defp pairs(opts, fun) do
    cond do
      is_map(opts) and not is_struct(opts) -> {:ok, Map.to_list(opts)}
      is_list(opts) and Keyword.keyword?(opts) -> {:ok, opts}
      true -> bad(fun, "options: expected a keyword list or a map, got #{inspect(opts, limit: 10)}")
    end
  end

  defp unknown(_pairs, :any, _fun), do: :ok

  defp unknown(pairs, known, fun) do
    case Enum.find(pairs, fn {k, _} -> k not in known end) do
      nil -> :ok
      {k, _} -> {:error, unknown_error(k, known, "option of #{fun}", fun)}
    end
  end

  @doc false
  # The sidecar's wording for an unknown key (src/contract/schema.ts), for an option:
  # "execution_time: unknown option of report_outcome (did you mean execution_time_ms?); known: ..."
  @spec unknown_error(term(), [atom()], String.t(), atom() | nil) :: Error.t()
  def unknown_error(key, known, what, op \\ nil) do
    name = if is_atom(key), do: Atom.to_string(key), else: inspect(key, limit: 5)
    names = Enum.map(known, &Atom.to_string/1)
    hint = if near = closest(name, names), do: " (did you mean #{near}?)", else: ""
    list = if names == [], do: "it takes none", else: "known: #{Enum.join(names, ", ")}"
    Error.new(:bad_request, "#{name}: unknown #{what}#{hint}; #{list}", op: op)
  end

  @doc false
  # The known name nearest to a typo, if it is near enough to be the one meant (as the sidecar decides).
  @spec closest(String.t(), [String.t()]) :: String.t() | nil
  def closest(key, names) do
    scored = for n <- names, d = distance(key, n), d != :infinity, do: {d, n}

    case Enum.min(scored, fn -> nil end) do
      {d, n} -> if d <= max(2, div(String.length(key), 4)), do: n
      nil -> nil
    end
  end

  # Edit distance; :infinity when the lengths differ by more than 3 (never a typo).
  defp distance(a, b) do
    {a, b} = {String.graphemes(a), String.graphemes(b)}
    if abs(length(a) - length(b)) > 3, do: :infinity, else: levenshtein(a, b)
  end

  defp levenshtein(a, b) do
    a
    |> Enum.with_index(1)
    |> Enum.reduce(Enum.to_list(0..length(b)), fn {ca, i}, prev ->
      {row, _} =
        Enum.reduce(Enum.zip(b, Enum.zip(prev, tl(prev))), {[i], i}, fn {cb, {diag, up}}, {acc, left} ->
          v = Enum.min([up + 1, left + 1, diag + if(ca == cb, do: 0, else: 1)])
          {[v | acc], v}
        end)

      Enum.reverse(row)
    end)
    |> List.last()
  end

  @doc false
  # A map argument: a map or a keyword list.
  @spec map(term(), atom(), String.t()) :: {:ok, map()} | {:error, Error.t()}
  def map(%_{} = s, fun, what), do: bad(fun, "#{what}: expected a map or a keyword list, got #{inspect(s, limit: 10)}")
  def map(m, _fun, _what) when is_map(m), do: {:ok, m}

  def map(l, fun, what) when is_list(l) do
    if Keyword.keyword?(l), do: {:ok, Map.new(l)}, else: bad(fun, "#{what}: expected a map or a keyword list, got #{inspect(l, limit: 10)}")
  end

  def map(other, fun, what), do: bad(fun, "#{what}: expected a map or a keyword list, got #{inspect(other, limit: 10)}")

  @doc false
  @spec bad(atom() | nil, String.t()) :: {:error, Error.t()}
  def bad(nil, message), do: {:error, Error.new(:bad_request, message)}
  def bad(fun, message), do: {:error, Error.new(:bad_request, "#{fun}: #{message}", op: fun)}

  # -- the closed loop -----------------------------------------------------------

  @doc false
  # choose_prompt's arguments: the experiment's name (a string: never read as an instance),
  # the base (text, or a template with variables) and the context.
  @spec choose(term(), term(), term()) :: {:ok, map()} | {:error, Error.t()}
  def choose(experiment, base, context) when is_binary(experiment) do
    with {:ok, context} <- map(context, :choose_prompt, "context"),
         {:ok, base} <- base(base) do
      {:ok, Map.merge(base, %{experiment: experiment, context: context})}
    end
  end

  def choose(experiment, _base, _context),
    do: bad(:choose_prompt, "experiment: " <> experiment_name(experiment, "choose_prompt(\"triage\", base, context, name: MyApp.Prompts)"))

  @doc false
  @spec experiment_name(term(), String.t()) :: String.t()
  def experiment_name(got, example) when is_atom(got) and got not in [nil, true, false],
    do: "expected the experiment's name (a string), got the atom #{inspect(got)}; an instance is named with the name: option, as in #{example}"

  def experiment_name(got, _example), do: "expected the experiment's name (a string), got #{inspect(got, limit: 10)}"

  defp base(%{template_id: id} = t), do: {:ok, %{template_id: id, variables: Map.get(t, :variables, %{})}}
  defp base(text) when is_binary(text), do: {:ok, %{prompt: text}}

  defp base([{_, _} | _] = kw) do
    if Keyword.keyword?(kw) and Keyword.has_key?(kw, :template_id),
      do: base(Map.new(kw)),
      else: bad(:choose_prompt, "base: expected the prompt's text or %{template_id: id, variables: map}, got #{inspect(kw, limit: 10)}")
  end

  defp base(other), do: bad(:choose_prompt, "base: expected the prompt's text or %{template_id: id, variables: map}, got #{inspect(other, limit: 10)}")

  # The keys of an outcome map (report_outcome/3).
  @outcome_keys [:success, :score, :latency_ms, :input_tokens, :output_tokens, :cost]

  @doc false
  # report_outcome's track_execution entry: the choice's prompt id and metadata, the outcome, the options.
  @spec outcome(term(), term(), map()) :: {:ok, map()} | {:error, Error.t()}
  def outcome(%{prompt_id: id, metadata: meta}, success?, extra) when is_boolean(success?) and is_map(meta) do
    with {:ok, extra_meta} <- map(Map.get(extra, :metadata, %{}), :report_outcome, "metadata") do
      {:ok,
       extra
       |> Map.merge(%{prompt_id: id, success: success?, metadata: Map.merge(meta, extra_meta)})
       |> Map.put_new(:execution_time_ms, 0)}
    end
  end

  # An outcome as a map (a graded score, latency, tokens, cost): its keys become the entry's fields
  # (latency_ms is execution_time_ms); the sidecar checks every value and names a bad one.
  def outcome(%{prompt_id: _} = choice, %{} = outcome, extra) when not is_struct(outcome) do
    outcome = Map.new(outcome, fn {k, v} -> {outcome_key(k), v} end)

    case Map.keys(outcome) -- @outcome_keys do
      [] ->
        if Map.has_key?(outcome, :success) or Map.has_key?(outcome, :score) do
          {latency, outcome} = Map.pop(outcome, :latency_ms)
          extra = if latency == nil, do: extra, else: Map.put(extra, :execution_time_ms, latency)

          with {:ok, entry} <- outcome(choice, Map.get(outcome, :success, true), extra) do
            entry = if Map.has_key?(outcome, :success), do: entry, else: Map.delete(entry, :success)
            {:ok, Map.merge(entry, Map.delete(outcome, :success))}
          end
        else
          bad(:report_outcome, "outcome: expected success or score (or both) in #{inspect(outcome, limit: 5)}")
        end

      unknown ->
        bad(
          :report_outcome,
          "outcome: unknown key#{if length(unknown) > 1, do: "s"} #{Enum.map_join(unknown, ", ", &inspect/1)}; known: #{Enum.map_join(@outcome_keys, ", ", &inspect/1)}"
        )
    end
  end

  def outcome(choice, success?, _extra),
    do:
      bad(
        :report_outcome,
        "expected a choice from choose_prompt and a boolean or an outcome map, got #{inspect(choice, limit: 5)} and #{inspect(success?, limit: 5)}"
      )

  defp outcome_key(k) when is_atom(k), do: k
  defp outcome_key(k) when is_binary(k), do: Enum.find(@outcome_keys, k, &(Atom.to_string(&1) == k))
  defp outcome_key(k), do: k

  # -- ids and encoding ------------------------------------------------------------

  @doc false
  # A random (version 4) UUID, from :crypto.strong_rand_bytes/1.
  @spec uuid4() :: String.t()
  def uuid4 do
    <<a::48, _::4, b::12, _::2, c::62>> = :crypto.strong_rand_bytes(16)
    <<u::128>> = <<a::48, 4::4, b::12, 2::2, c::62>>
    hex = u |> Integer.to_string(16) |> String.pad_leading(32, "0") |> String.downcase()
    <<p1::binary-8, p2::binary-4, p3::binary-4, p4::binary-4, p5::binary-12>> = hex
    Enum.join([p1, p2, p3, p4, p5], "-")
  end

  @doc false
  # Terms as the sidecar takes them: times as ISO 8601 text (what its timestamp fields
  # accept, besides unix ms), keyword lists as maps; everything else unchanged (metadata
  # values included: strings, numbers and booleans go as they are).
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
