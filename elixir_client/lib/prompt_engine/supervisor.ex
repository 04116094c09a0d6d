defmodule PromptEngine.Supervisor do
  @moduledoc """
  Owns one instance: its start options (validated here, before anything is
  spawned), an event `Registry`, `:pool_size` sidecar connections and the
  instance's lifecycle.

  A connection restarts its own sidecar when it dies, with capped
  exponential backoff, for as long as the instance lives
  (`PromptEngine.Connection`); this supervisor restarts a connection
  *process* only if it crashes (3 in 5 s, else the instance ends).

  Its last child, `PromptEngine.Lifecycle`, makes `start_link/1` return once
  every sidecar has completed its ready handshake (`sync_start: true`, the
  default), or fail with the first sidecar's error; and, being stopped
  first, marks the instance stopped so that calls answer `:no_instance` at
  once instead of waiting on connections that are going away.

  Callers pick a connection through `:persistent_term` + `:atomics`
  (round-robin over the sidecars that are ready, or by a route key), so
  picking costs no message. The instance's entry also records whether
  `:telemetry` was loaded when the instance started.

  Secrets among the options (`database_url`, `env`, `args`, the dashboard's token)
  are sealed (`PromptEngine.Redact`) before they reach a child spec, so no
  supervisor report or `:sys.get_state/1` shows them.
  """
  use Supervisor

  alias PromptEngine.{Args, Error, Redact}

  @defaults [pool_size: 1, timeout: 5_000, ready_timeout: 60_000, sync_start: true, max_restarts: :infinity, backoff_initial: 100, backoff_max: 10_000]
  @secret [:database_url, :env, :dashboard, :args]

  # {option, check, description of the expected type}
  @options [
    name: {&is_atom/1, "an atom"},
    pool_size: {&PromptEngine.Supervisor.pos_int?/1, "a positive integer"},
    executable: {&PromptEngine.Supervisor.text_or_nil?/1, "a path (string)"},
    args: {&PromptEngine.Supervisor.texts?/1, "a list of strings"},
    env: {&PromptEngine.Supervisor.env?/1, "a list of {name, value} string pairs or a map (names not empty, without = or NUL; values without NUL)"},
    timeout: {&PromptEngine.Supervisor.timeout?/1, "a positive integer (ms) of at most #{PromptEngine.Args.max_timeout()}"},
    max_in_flight: {&PromptEngine.Supervisor.pos_int?/1, "a positive integer"},
    ready_timeout: {&PromptEngine.Supervisor.timeout?/1, "a positive integer (ms) of at most #{PromptEngine.Args.max_timeout()}"},
    sync_start: {&is_boolean/1, "a boolean"},
    max_restarts: {&PromptEngine.Supervisor.restarts?/1, ":infinity or a non-negative integer"},
    backoff_initial: {&PromptEngine.Supervisor.pos_int?/1, "a positive integer (ms)"},
    backoff_max: {&PromptEngine.Supervisor.pos_int?/1, "a positive integer (ms)"},
    capture_stderr: {&is_boolean/1, "a boolean"},
    # resolved by PromptEngine.Sidecar; nil falls back to the app env there
    data_dir: {&PromptEngine.Supervisor.text_or_nil?/1, "a path (string)"},
    database_url: {&PromptEngine.Supervisor.binary_or_nil?/1, "a URL (string; \"\" for none)"},
    schema: {&PromptEngine.Supervisor.schema?/1, "a PostgreSQL schema name (lower-case letters, digits and _, at most 63, not starting with a digit)"},
    dashboard: {&PromptEngine.Supervisor.dashboard?/1, "[port: 1..65535, host: \"127.0.0.1\", token: \"...\"] (a keyword list or a map)"},
    node: {&PromptEngine.Supervisor.node?/1, "a path to the node executable (string), or false to run the executable without Node"}
  ]
  @known Keyword.keys(@options)

  @doc false
  # PromptEngine.child_spec/1 is the public one.
  def child_spec(opts), do: super(opts)

  @doc false
  def start_link(opts) do
    with {:ok, opts} <- validate(opts),
         :ok <- check_pool(opts) do
      case Supervisor.start_link(__MODULE__, opts, name: sup_name(opts[:name])) do
        # The first sidecar's error, as it is, rather than wrapped in the child that saw it.
        {:error, {:shutdown, {:failed_to_start_child, _child, %Error{} = e}}} -> {:error, e}
        other -> other
      end
    end
  end

  @doc """
  Check start options (a keyword list or a map) and return them as a keyword
  list with `:name` filled in; secrets sealed.

      iex> PromptEngine.Supervisor.validate(pool_size: 2)
      {:ok, [name: PromptEngine, pool_size: 2]}
      iex> {:error, %PromptEngine.Error{reason: :bad_option}} = PromptEngine.Supervisor.validate(pool: 2)
  """
  @spec validate(keyword() | map()) :: {:ok, keyword()} | {:error, Error.t()}
  def validate(opts) when is_map(opts) and not is_struct(opts), do: validate(Map.to_list(opts))

  def validate(opts) when is_list(opts) do
    cond do
      not Keyword.keyword?(opts) ->
        bad("start options must be a keyword list or a map, got: #{inspect(opts, limit: 10)}")

      (unknown = Keyword.keys(opts) -- @known) != [] ->
        [first | _] = unknown
        hint = if near = Args.closest(Atom.to_string(first), Enum.map(@known, &Atom.to_string/1)), do: " (did you mean :#{near}?)", else: ""

        bad(
          "unknown start option#{if length(unknown) > 1, do: "s"} #{Enum.map_join(unknown, ", ", &inspect/1)}#{hint}; known options: #{Enum.map_join(@known, ", ", &inspect/1)}"
        )

      true ->
        Enum.reduce_while(opts, {:ok, []}, fn {key, value}, {:ok, acc} ->
          {check, expected} = Keyword.fetch!(@options, key)
          plain = Redact.unseal(value)

          cond do
            not check.(plain) ->
              {:halt, bad("start option #{inspect(key)} must be #{expected}, got: #{shown(key, plain)}")}

            true ->
              normalize(key, plain)
              |> then(fn
                {:ok, v} -> {:cont, {:ok, [{key, seal(key, v)} | acc]}}
                error -> {:halt, error}
              end)
          end
        end)
        |> case do
          {:ok, acc} -> backoff_order(Keyword.put_new(Enum.reverse(acc), :name, PromptEngine))
          error -> error
        end
    end
  end

  def validate(other), do: bad("start options must be a keyword list or a map, got: #{inspect(other, limit: 10)}")

  @doc false
  # Options as they may go into a child spec: secrets sealed, the rest as given.
  def seal(opts) when is_map(opts) and not is_struct(opts), do: Map.new(opts, fn {k, v} -> {k, seal(k, v)} end)
  def seal(opts) when is_list(opts), do: if(Keyword.keyword?(opts), do: Enum.map(opts, fn {k, v} -> {k, seal(k, v)} end), else: opts)
  def seal(opts), do: opts

  defp seal(key, value) when key in @secret and value != nil, do: Redact.seal(value)
  defp seal(_key, value), do: value

  # A secret's value is never printed, also when it is of the wrong type.
  defp shown(key, _value) when key in @secret, do: "(not shown: it may hold a secret)"
  defp shown(_key, value), do: inspect(value, limit: 10)

  defp normalize(:env, env), do: {:ok, Enum.map(env, fn {k, v} -> {to_string(k), v && to_string(v)} end)}
  defp normalize(:dashboard, nil), do: {:ok, nil}
  defp normalize(:dashboard, d), do: dashboard(d)
  defp normalize(_key, value), do: {:ok, value}

  defp backoff_order(opts) do
    if Keyword.get(opts, :backoff_max, 10_000) < Keyword.get(opts, :backoff_initial, 100),
      do: bad("start option :backoff_max must be at least :backoff_initial (#{Keyword.get(opts, :backoff_initial, 100)} ms)"),
      else: {:ok, opts}
  end

  @dashboard_keys [:host, :port, :token]

  # dashboard: [port: 4050, host: "127.0.0.1", token: "..."] -> %{host, port, token}
  defp dashboard(d) do
    pairs = if is_map(d), do: Map.to_list(d), else: d

    case Enum.find(pairs, fn {k, _} -> k not in @dashboard_keys end) do
      {k, _} ->
        {:error, %{Args.unknown_error(k, @dashboard_keys, "key of the dashboard start option") | reason: :bad_option}}

      nil ->
        d = Map.new(pairs)

        cond do
          not is_integer(d[:port]) or d[:port] not in 1..65_535 ->
            bad("start option :dashboard: port must be an integer in 1..65535, got: #{inspect(d[:port])}")

          Map.has_key?(d, :host) and not text?(d[:host]) ->
            bad("start option :dashboard: host must be a non-empty string, got: #{inspect(d[:host])}")

          Map.has_key?(d, :token) and not text?(d[:token]) ->
            bad("start option :dashboard: token must be a non-empty string")

          true ->
            {:ok, Map.put_new(d, :host, "127.0.0.1")}
        end
    end
  end

  # PGlite is one process's database: a pool over it would be n separate stores and a split closed loop.
  defp check_pool(opts) do
    size = Keyword.get(opts, :pool_size, 1)

    if size > 1 and database_url(opts) in [nil, ""] do
      bad(
        "pool_size: #{size} sidecars cannot share the embedded PGlite store (one process owns its directory, so each sidecar " <>
          "would keep a store of its own and the closed loop would split between them). Set database_url: to a PostgreSQL " <>
          "every sidecar shares (or config :prompt_engine, database_url: ...), or use pool_size: 1"
      )
    else
      :ok
    end
  end

  # The DATABASE_URL the sidecars will see: env: wins, then the option or app env, then the VM's.
  defp database_url(opts) do
    env = Redact.unseal(Keyword.get(opts, :env, []))

    case List.keyfind(env, "DATABASE_URL", 0) do
      {_, v} -> v
      nil -> Redact.unseal(opts[:database_url]) || Application.get_env(:prompt_engine, :database_url) || System.get_env("DATABASE_URL")
    end
  end

  defp bad(message), do: {:error, Error.new(:bad_option, message)}

  @doc false
  def pos_int?(v), do: is_integer(v) and v > 0
  @doc false
  def timeout?(v), do: pos_int?(v) and v <= PromptEngine.Args.max_timeout()
  @doc false
  def restarts?(v), do: v == :infinity or (is_integer(v) and v >= 0)
  @doc false
  def text?(v), do: is_binary(v) and v != ""
  @doc false
  def text_or_nil?(v), do: v == nil or text?(v)
  @doc false
  def binary_or_nil?(v), do: v == nil or is_binary(v)
  @doc false
  def schema?(v), do: v == nil or (is_binary(v) and Regex.match?(~r/\A[a-z_][a-z0-9_]{0,62}\z/, v))
  @doc false
  def dashboard?(v), do: v == nil or (is_map(v) and not is_struct(v)) or (is_list(v) and Keyword.keyword?(v))
  @doc false
  def node?(v), do: v == nil or v == false or text?(v)
  @doc false
  def texts?(v), do: is_list(v) and Enum.all?(v, &is_binary/1)
  @doc false
  def env?(v) when is_map(v), do: env?(Map.to_list(v))
  def env?(v) when is_list(v), do: Enum.all?(v, &env_pair?/1)
  def env?(_), do: false

  # What an OS environment can hold (Port.open/2 raises otherwise): a name, not empty, without
  # = or NUL; a value without NUL (nil or false unsets the variable).
  defp env_pair?({k, val}) when (is_binary(k) or is_list(k)) and (is_binary(val) or is_list(val) or val in [nil, false]) do
    name = IO.chardata_to_string(k)
    name != "" and not String.contains?(name, ["=", <<0>>]) and (val in [nil, false] or not String.contains?(IO.chardata_to_string(val), <<0>>))
  rescue
    _ -> false
  end

  defp env_pair?(_), do: false

  @impl true
  def init(opts) do
    opts = Keyword.merge(@defaults, opts)
    name = Keyword.fetch!(opts, :name)
    size = Keyword.fetch!(opts, :pool_size)
    conns = for i <- 1..size, do: conn_name(name, i)
    telemetry = PromptEngine.Telemetry.enabled?()
    ready = :atomics.new(size, [])

    :persistent_term.put({__MODULE__, name}, %{
      conns: List.to_tuple(conns),
      counter: :atomics.new(1, []),
      ready: ready,
      timeout: Keyword.fetch!(opts, :timeout),
      telemetry: telemetry,
      stopped: nil
    })

    conn_opts = Keyword.drop(opts, [:name, :pool_size, :sync_start, :timeout])

    children =
      [{Registry, keys: :duplicate, name: registry(name)}] ++
        for {conn, i} <- Enum.with_index(conns, 1) do
          Supervisor.child_spec(
            {PromptEngine.Connection, [name: conn, registry: registry(name), instance: name, index: i, ready: ready, telemetry: telemetry] ++ conn_opts},
            id: {:connection, i}
          )
        end ++
        [{PromptEngine.Lifecycle, name: name, conns: conns, sync_start: opts[:sync_start], ready_timeout: opts[:ready_timeout]}]

    Supervisor.init(children, strategy: :one_for_one, max_restarts: 3, max_seconds: 5)
  end

  @doc false
  # The instance's settings, or nil when no instance of that name was ever started here.
  def config(name), do: :persistent_term.get({__MODULE__, name}, nil)

  @doc false
  # Called by PromptEngine.Lifecycle: calls answer :no_instance at once from now on.
  def mark(name, why) when why in [:stopped, :failed] do
    case config(name) do
      nil -> :ok
      config -> :persistent_term.put({__MODULE__, name}, %{config | stopped: why})
    end
  end

  @doc false
  # Sidecar `index` of the instance is ready (1) or not (0); see pick/2.
  def set_ready({ready, index}, ready?) when is_reference(ready), do: :atomics.put(ready, index, if(ready?, do: 1, else: 0))
  def set_ready(_, _), do: :ok

  @doc false
  # A connection: round-robin over the sidecars that are ready (the chosen one when none
  # is), or by `route_key`, so that one key always reaches the same sidecar: each sidecar
  # has its own cache (cache_put and cache_get of a key must meet) and serves its
  # experiments from memory (a choice and its outcome must meet). Nil for no instance.
  def pick(name, route_key \\ nil) do
    case config(name) do
      nil ->
        nil

      %{conns: conns, counter: counter, ready: ready} ->
        n = tuple_size(conns)

        if route_key != nil do
          elem(conns, :erlang.phash2(route_key, n))
        else
          i = rem(:atomics.add_get(counter, 1, 1), n)
          elem(conns, first_ready(ready, i, n, 0) || i)
        end
    end
  end

  defp first_ready(_ready, _i, n, tried) when tried >= n, do: nil

  defp first_ready(ready, i, n, tried) do
    j = rem(i + tried, n)
    if :atomics.get(ready, j + 1) == 1, do: j, else: first_ready(ready, i, n, tried + 1)
  end

  @doc """
  The connection processes of an instance (for `PromptEngine.Connection.info/1`).

      iex> [conn | _] = PromptEngine.Supervisor.connections(PromptEngine)
      iex> %{os_pid: _} = PromptEngine.Connection.info(conn)
  """
  @spec connections(atom()) :: [atom()]
  def connections(name \\ PromptEngine) do
    case config(name) do
      %{conns: conns} -> Tuple.to_list(conns)
      nil -> []
    end
  end

  @doc false
  def registry(name), do: Module.concat(name, Events)
  @doc false
  def sup_name(name), do: Module.concat(name, Supervisor)
  defp conn_name(name, i), do: Module.concat(name, "Connection#{i}")
end

defmodule PromptEngine.Lifecycle do
  @moduledoc false
  # The last child of an instance's supervisor. Started after the connections: with
  # sync_start it waits for every sidecar's ready handshake (in parallel), so the
  # instance's start returns when the first calls will be answered, or fails with the
  # first sidecar's error. Stopped before the connections (children stop in reverse
  # order): it marks the instance stopped, so calls answer :no_instance at once.
  use GenServer

  def start_link(opts), do: GenServer.start_link(__MODULE__, opts)

  def child_spec(opts), do: %{id: __MODULE__, start: {__MODULE__, :start_link, [opts]}, shutdown: 5_000}

  @impl true
  def init(opts) do
    Process.flag(:trap_exit, true)
    name = Keyword.fetch!(opts, :name)

    if Keyword.fetch!(opts, :sync_start) do
      wait = Keyword.fetch!(opts, :ready_timeout) + 5_000

      opts[:conns]
      |> Enum.map(fn conn -> Task.async(fn -> PromptEngine.Connection.await_ready(conn, wait) end) end)
      |> Task.await_many(wait + 1_000)
      |> Enum.find(:ok, &(&1 != :ok))
      |> case do
        :ok ->
          {:ok, name}

        {:error, error} ->
          PromptEngine.Supervisor.mark(name, :failed)
          {:stop, error}
      end
    else
      {:ok, name}
    end
  end

  @impl true
  def handle_info(_msg, name), do: {:noreply, name}

  @impl true
  def terminate(_reason, name) do
    PromptEngine.Supervisor.mark(name, :stopped)
    :ok
  end
end
