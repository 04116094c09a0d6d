defmodule PromptEngine.Request do
  # Owns the path of one public call after its arguments are shaped: options checked
  # (PromptEngine.Args), the instance resolved (never started, stopped, or running), the
  # telemetry span (PromptEngine.Telemetry), the sidecar picked (round-robin, or by a
  # route key: a cache key, an experiment's name), the request sent to its
  # PromptEngine.Connection, and the tracking ids that make a retry store once.
  #
  # Tracking ids: every tracking entry gets an `id` (a UUID v4) unless the app gave one.
  # A tracking call that gets :sidecar_exited is sent again with the same id while its
  # deadline allows (the sidecar stores an id once, so the retry cannot duplicate), and
  # when it still fails (:sidecar_exited, :timeout, :unavailable, :shutting_down) its id is
  # remembered in the calling process under the call's exact arguments, so that the app's
  # own retry of the same call reuses it (up to 1,000 ids per process, each for 10 minutes;
  # a success forgets it).
  @moduledoc false

  alias PromptEngine.{Args, Connection, Error, Telemetry}

  @tracking [:track_execution, :track_feedback, :track_evolution, :track_ab_result, :track_context_signature]
  @retry_ids {__MODULE__, :retry_ids}
  @retry_ids_max 1_000
  @retry_ids_ms 600_000
  @retryable [:sidecar_exited, :timeout, :unavailable, :shutting_down]

  @doc false
  # Check `opts` for the public function `fun` (default: the op), merge the other options
  # into `args` (or under `into:`), and call `op`.
  @spec run(atom(), map(), term(), keyword()) :: :ok | {:ok, term()} | {:error, Error.t()}
  def run(op, args, opts, how \\ []) do
    fun = Keyword.get(how, :as, op)

    with {:ok, copts, extra} <- Args.options(opts, fun, op) do
      args =
        case Keyword.fetch(how, :into) do
          {:ok, key} -> Map.put(args, key, extra)
          :error -> Map.merge(extra, args)
        end

      call(op, args, copts)
    end
  end

  @doc false
  # call/3: any op by name; options are checked against the op's arguments when the table knows it.
  @spec generic(term(), term(), term()) :: :ok | {:ok, term()} | {:error, Error.t()}
  def generic(op, args, opts) when is_atom(op) and op not in [nil, true, false] do
    with {:ok, args} <- Args.map(args, op, "arguments"),
         {:ok, copts, extra} <- Args.options(opts, :call, op) do
      call(op, Map.merge(extra, args), copts)
    end
  end

  def generic(op, _args, _opts), do: Args.bad(nil, "op: expected an atom such as :health, got: #{inspect(op, limit: 10)}")

  @doc false
  # `fun.(map)` when `value` is a map or a keyword list, else the :bad_request naming `what`.
  @spec with_map(term(), atom(), String.t(), (map() -> term())) :: term()
  def with_map(value, fun_name, what, fun) do
    with {:ok, map} <- Args.map(value, fun_name, what), do: fun.(map)
  end

  @doc false
  @spec with_args({:ok, map()} | {:error, Error.t()}, (map() -> term())) :: term()
  def with_args({:ok, args}, fun), do: fun.(args)
  def with_args(error, _fun), do: error

  @doc false
  # report_outcome/3: a track_execution of the choice's prompt id and metadata (routed by its experiment).
  @spec report_outcome(term(), term(), term()) :: :ok | {:error, Error.t()}
  def report_outcome(choice, success?, opts) do
    with {:ok, copts, extra} <- Args.options(opts, :report_outcome),
         {:ok, entry} <- Args.outcome(choice, success?, extra),
         {:ok, _} <- call(:track_execution, entry, copts) do
      :ok
    end
  end

  @doc false
  # experiment/2: a name (a string), or nil for every experiment; an atom is refused.
  @spec experiment(term(), term()) :: {:ok, map()} | {:error, Error.t()}
  def experiment(name, opts) when is_binary(name), do: run(:experiment, %{experiment: name}, opts)
  def experiment(nil, opts), do: run(:experiment, %{}, opts)
  def experiment(name, _opts), do: Args.bad(:experiment, "name: " <> Args.experiment_name(name, "experiment(\"triage\", name: MyApp.Prompts)"))

  @doc false
  # subscribe/1 and unsubscribe/1: the caller (un)registers in the instance's event Registry.
  @spec subscribe(term(), :subscribe | :unsubscribe) :: :ok | {:error, Error.t()}
  def subscribe(opts, fun) do
    with {:ok, copts, _} <- Args.options(opts, fun),
         name = Keyword.get(copts, :name, PromptEngine),
         {:ok, _config} <- instance(name, fun) do
      registry = PromptEngine.Supervisor.registry(name)

      try do
        if fun == :subscribe, do: {:ok, _} = Registry.register(registry, :events, nil), else: Registry.unregister(registry, :events)
        :ok
      rescue
        ArgumentError -> {:error, stopped(name, fun, :down)}
      end
    end
  end

  @doc false
  # cache_stats over a pool: figures summed, hit_rate recomputed from the sums.
  @spec sum_cache_stats([term()]) :: {:ok, map()} | {:error, Error.t()}
  def sum_cache_stats(results) do
    case Enum.find(results, &(not match?({:ok, _}, &1))) do
      nil ->
        sum = fn k -> results |> Enum.map(fn {:ok, s} -> Map.get(s, k, 0) end) |> Enum.sum() end
        hits = sum.(:hits)
        misses = sum.(:misses)
        rate = if hits + misses == 0, do: 0.0, else: hits / (hits + misses)

        {:ok,
         %{total_entries: sum.(:total_entries), hits: hits, misses: misses, hit_rate: rate, evictions: sum.(:evictions), invalidations: sum.(:invalidations)}}

      error ->
        error
    end
  end

  @doc false
  # A tracking op: `entry` is a map or a keyword list; options as for run/4.
  @spec track(atom(), term(), term()) :: {:ok, map()} | {:error, Error.t()}
  def track(op, entry, opts) do
    with {:ok, entry} <- Args.map(entry, op, "entry"), do: run(op, entry, opts)
  end

  @doc false
  @spec call(atom(), map(), keyword()) :: :ok | {:ok, term()} | {:error, Error.t()}
  def call(op, args, copts) do
    with_instance(op, copts, fn name, config ->
      timeout = Keyword.get(copts, :timeout, config.timeout)
      deadline = now() + timeout
      {args, memo} = if op in @tracking, do: with_id(name, op, args), else: {args, nil}
      encoded = Args.encode(args)
      # Routed on the encoded arguments: nested keyword lists are maps there, as the sidecar reads them.
      result = send_request(name, op, encoded, route_key(op, encoded), Keyword.get(copts, :queue, false), {deadline, timeout}, memo != nil)
      remember(memo, result)
      result
    end)
  end

  @doc false
  # `op` on every sidecar of the instance at once (cache_clear, cache_stats); `combine` makes one result of theirs.
  @spec every(atom(), term(), ([term()] -> term())) :: term()
  def every(op, opts, combine) do
    with {:ok, copts, _extra} <- Args.options(opts, op) do
      with_instance(op, copts, fn name, config ->
        timeout = Keyword.get(copts, :timeout, config.timeout)
        deadline = now() + timeout

        PromptEngine.Supervisor.connections(name)
        |> Enum.map(fn conn -> Task.async(fn -> send_to(name, conn, op, %{}, false, {deadline, timeout}, false) end) end)
        |> Task.await_many(timeout + 6_000)
        |> combine.()
      end)
    end
  end

  @doc false
  # The instance's config, or the :no_instance error saying why there is none.
  @spec instance(atom(), atom()) :: {:ok, map()} | {:error, Error.t()}
  def instance(name, op) do
    case PromptEngine.Supervisor.config(name) do
      nil ->
        {:error,
         Error.new(
           :no_instance,
           "no instance named #{inspect(name)} was started: start it with {PromptEngine, name: #{inspect(name)}} in your supervision tree, or pass the name: of one that is",
           op: op
         )}

      %{stopped: why} when why != nil ->
        {:error, stopped(name, op, why)}

      config ->
        {:ok, config}
    end
  end

  defp with_instance(op, copts, fun) do
    name = Keyword.get(copts, :name, PromptEngine)

    with {:ok, config} <- instance(name, op) do
      Telemetry.span(op, name, config.telemetry, fn -> fun.(name, config) end)
    end
  end

  defp stopped(name, op, :stopped),
    do: Error.new(:no_instance, "the instance #{inspect(name)} was stopped (its supervisor shut it down); start it again to call it", op: op, details: :stopped)

  defp stopped(name, op, :failed),
    do:
      Error.new(:no_instance, "the instance #{inspect(name)} failed to start (its start returned the error); start it again to call it",
        op: op,
        details: :failed
      )

  defp stopped(name, op, :down),
    do: Error.new(:no_instance, "the instance #{inspect(name)} is not running: its supervisor exited", op: op, details: :down)

  # -- sending ------------------------------------------------------------------

  defp send_request(name, op, args, route_key, queue?, by, retry_exited?) do
    send_to(name, PromptEngine.Supervisor.pick(name, route_key), op, args, queue?, by, retry_exited?)
  end

  # `by`: {deadline, the caller's timeout} (a timeout's message names the caller's own, not what is left).
  defp send_to(name, conn, op, args, queue?, {deadline, timeout} = by, retry_exited?) do
    left = max(deadline - now(), 0)

    case Connection.request(conn, op, args, timeout: left, queue: queue?, caller_timeout: timeout) do
      # The sidecar died with the request in flight; it may or may not have stored it. The
      # entry's id makes sending it again safe: the connection answers once a new sidecar is
      # up, or at once with the truth when none will be within the deadline.
      {:error, %Error{reason: :sidecar_exited}} = error ->
        if retry_exited? and deadline - now() > 0, do: send_to(name, conn, op, args, queue?, by, retry_exited?), else: error

      # The connection process ended with the request: sent again only when its id makes that safe.
      {:error, %Error{details: :connection_crashed}} = error ->
        if retry_exited? and deadline - now() > 20,
          do:
            (
              Process.sleep(20)
              send_to(name, conn, op, args, queue?, by, retry_exited?)
            ),
          else: error

      # The connection process itself is down (its supervisor restarts it, or the instance is gone).
      {:error, %Error{details: :connection_down}} = error ->
        cond do
          Process.whereis(PromptEngine.Supervisor.sup_name(name)) == nil ->
            {:error, stopped(name, op, :down)}

          deadline - now() <= 20 ->
            error

          true ->
            Process.sleep(20)
            send_to(name, conn, op, args, queue?, by, retry_exited?)
        end

      other ->
        other
    end
  end

  # Affinity: a choice, its outcome and the experiment's state go to the same sidecar of a
  # pool (by experiment name); a cache key always reaches the same sidecar. Every key under an
  # atom or a string (as the sidecar reads it); an outcome names its experiment in an execution's
  # metadata, a late rating in its context (the choice's metadata).
  defp route_key(op, args) when op in [:cache_get, :cache_put], do: field(args, :key)
  defp route_key(op, args) when op in [:choose_prompt, :experiment], do: field(args, :experiment) || field(args, :name)
  defp route_key(:track_execution, args), do: args |> field(:metadata) |> field(:experiment)
  defp route_key(:track_feedback, args), do: args |> field(:context) |> field(:experiment)
  defp route_key(_op, _args), do: nil

  defp field(m, key) when is_map(m), do: Map.get(m, key, Map.get(m, Atom.to_string(key)))
  defp field(_other, _key), do: nil

  # -- tracking ids ---------------------------------------------------------------

  defp with_id(name, op, args) do
    if Map.has_key?(args, :id) or Map.has_key?(args, "id") do
      {args, nil}
    else
      key = :erlang.md5(:erlang.term_to_binary({name, op, args}))
      id = remembered(key) || Args.uuid4()
      {Map.put(args, :id, id), {key, id}}
    end
  end

  defp remembered(key) do
    case Process.get(@retry_ids) do
      %{^key => {id, at}} -> if now() - at < @retry_ids_ms, do: id
      _ -> nil
    end
  end

  defp remember(nil, _result), do: :ok

  defp remember({key, id}, {:error, %Error{reason: reason}}) when reason in @retryable do
    ids = Process.get(@retry_ids, %{})
    t = now()
    ids = ids |> Map.reject(fn {_, {_, at}} -> t - at >= @retry_ids_ms end) |> Map.put(key, {id, t})

    ids =
      if map_size(ids) > @retry_ids_max,
        do: ids |> Enum.sort_by(fn {_, {_, at}} -> -at end) |> Enum.take(@retry_ids_max) |> Map.new(),
        else: ids

    Process.put(@retry_ids, ids)
    :ok
  end

  defp remember({key, _id}, _result) do
    case Process.get(@retry_ids) do
      %{^key => _} = ids -> Process.put(@retry_ids, Map.delete(ids, key))
      _ -> :ok
    end

    :ok
  end

  defp now, do: System.monotonic_time(:millisecond)
end
