defmodule PromptEngine.Supervisor do
  @moduledoc """
  Owns one instance: its start options (validated here, before anything is
  spawned), an event `Registry` and `:pool_size` sidecar connections. A
  connection whose sidecar dies exits; this supervisor starts it again
  (within `:max_restarts` in `:max_seconds`). Callers pick a connection
  round-robin through `:persistent_term` + `:atomics`, so picking costs no
  message.

  The instance's `:persistent_term` entry also records whether `:telemetry`
  was loaded when the instance started (checked once here, not per call).
  """
  use Supervisor

  alias PromptEngine.Error

  # {option, check, description of the expected type}
  @options [
    name: {&is_atom/1, "an atom"},
    pool_size: {&PromptEngine.Supervisor.pos_int?/1, "a positive integer"},
    executable: {&PromptEngine.Supervisor.text_or_nil?/1, "a path (string)"},
    args: {&PromptEngine.Supervisor.texts?/1, "a list of strings"},
    env: {&PromptEngine.Supervisor.env?/1, "a list of {name, value} string pairs or a map"},
    timeout: {&PromptEngine.Supervisor.pos_int?/1, "a positive integer (ms)"},
    max_in_flight: {&PromptEngine.Supervisor.pos_int?/1, "a positive integer"},
    max_restarts: {&PromptEngine.Supervisor.non_neg_int?/1, "a non-negative integer"},
    max_seconds: {&PromptEngine.Supervisor.pos_int?/1, "a positive integer"},
    ready_timeout: {&PromptEngine.Supervisor.pos_int?/1, "a positive integer (ms)"},
    capture_stderr: {&is_boolean/1, "a boolean"},
    # resolved by PromptEngine.Sidecar; nil falls back to the app env there
    data_dir: {&PromptEngine.Supervisor.text_or_nil?/1, "a path (string)"},
    database_url: {&PromptEngine.Supervisor.binary_or_nil?/1, "a URL (string; \"\" for none)"},
    node: {&PromptEngine.Supervisor.node?/1, "a path to the node executable (string), or false to run the executable without Node"}
  ]
  @known Keyword.keys(@options)

  @doc false
  # PromptEngine.child_spec/1 is the public one.
  def child_spec(opts), do: super(opts)

  @doc false
  def start_link(opts) do
    case validate(opts) do
      {:ok, opts} -> Supervisor.start_link(__MODULE__, opts, name: sup_name(opts[:name]))
      {:error, _} = error -> error
    end
  end

  @doc """
  Check start options (a keyword list or a map) and return them as a keyword
  list with `:name` filled in.

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
        bad("unknown start option#{if length(unknown) > 1, do: "s"} #{Enum.map_join(unknown, ", ", &inspect/1)}; known options: #{Enum.map_join(@known, ", ", &inspect/1)}")

      true ->
        Enum.reduce_while(opts, {:ok, []}, fn {key, value}, {:ok, acc} ->
          {check, expected} = Keyword.fetch!(@options, key)

          if check.(value),
            do: {:cont, {:ok, [{key, value} | acc]}},
            else: {:halt, bad("start option #{inspect(key)} must be #{expected}, got: #{inspect(value, limit: 10)}")}
        end)
        |> case do
          {:ok, acc} -> {:ok, Keyword.put_new(Enum.reverse(acc), :name, PromptEngine) |> normalize_env()}
          error -> error
        end
    end
  end

  def validate(other), do: bad("start options must be a keyword list or a map, got: #{inspect(other, limit: 10)}")

  defp bad(message), do: {:error, Error.new(:bad_option, message)}

  defp normalize_env(opts) do
    case Keyword.fetch(opts, :env) do
      {:ok, env} -> Keyword.put(opts, :env, Enum.map(env, fn {k, v} -> {to_string(k), to_string(v)} end))
      :error -> opts
    end
  end

  @doc false
  def pos_int?(v), do: is_integer(v) and v > 0
  @doc false
  def non_neg_int?(v), do: is_integer(v) and v >= 0
  @doc false
  def text?(v), do: is_binary(v) and v != ""
  @doc false
  def text_or_nil?(v), do: v == nil or text?(v)
  @doc false
  def binary_or_nil?(v), do: v == nil or is_binary(v)
  @doc false
  def node?(v), do: v == nil or v == false or text?(v)
  @doc false
  def texts?(v), do: is_list(v) and Enum.all?(v, &is_binary/1)
  @doc false
  def env?(v) when is_map(v), do: env?(Map.to_list(v))
  def env?(v) when is_list(v), do: Enum.all?(v, &match?({k, val} when (is_binary(k) or is_list(k)) and (is_binary(val) or is_list(val)), &1))
  def env?(_), do: false

  @impl true
  def init(opts) do
    name = Keyword.fetch!(opts, :name)
    size = Keyword.get(opts, :pool_size, 1)
    conns = for i <- 1..size, do: conn_name(name, i)

    :persistent_term.put({__MODULE__, name}, %{
      conns: List.to_tuple(conns),
      counter: :atomics.new(1, []),
      timeout: Keyword.get(opts, :timeout, 5_000),
      telemetry: Code.ensure_loaded?(:telemetry)
    })

    conn_opts = Keyword.drop(opts, [:name, :pool_size, :max_restarts, :max_seconds])

    children =
      [{Registry, keys: :duplicate, name: registry(name)}] ++
        for {conn, i} <- Enum.with_index(conns, 1) do
          Supervisor.child_spec({PromptEngine.Connection, [name: conn, registry: registry(name), instance: name, index: i] ++ conn_opts}, id: {:connection, i})
        end

    Supervisor.init(children, strategy: :one_for_one, max_restarts: Keyword.get(opts, :max_restarts, 3), max_seconds: Keyword.get(opts, :max_seconds, 5))
  end

  @doc false
  # The instance's settings, or nil when no instance of that name was ever started here.
  def config(name), do: :persistent_term.get({__MODULE__, name}, nil)

  @doc false
  # Round-robin, or by `route_key` so that one key always reaches the same sidecar
  # (each sidecar has its own cache: cache_put and cache_get of a key must meet).
  def pick(name, route_key \\ nil) do
    case config(name) do
      nil ->
        nil

      %{conns: conns, counter: counter} ->
        n = tuple_size(conns)
        i = if route_key == nil, do: rem(:atomics.add_get(counter, 1, 1), n), else: :erlang.phash2(route_key, n)
        conn = elem(conns, i)

        cond do
          Process.whereis(conn) -> conn
          # a keyed call waits for its own sidecar rather than going to one that has not seen the key
          route_key != nil -> nil
          true -> first_alive(conns, i, n, 1)
        end
    end
  end

  defp first_alive(_conns, _i, n, tried) when tried >= n, do: nil

  defp first_alive(conns, i, n, tried) do
    conn = elem(conns, rem(i + tried, n))
    if Process.whereis(conn), do: conn, else: first_alive(conns, i, n, tried + 1)
  end

  @doc false
  def default_timeout(name) do
    case config(name) do
      %{timeout: t} -> t
      nil -> 5_000
    end
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
