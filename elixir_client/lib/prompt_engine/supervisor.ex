defmodule PromptEngine.Supervisor do
  @moduledoc """
  Supervises one instance: an event `Registry` and `:pool_size` sidecar
  connections. A connection whose sidecar dies exits; this supervisor starts
  it again (within `:max_restarts` in `:max_seconds`). Callers pick a
  connection round-robin through `:persistent_term` + `:atomics`, so picking
  costs no message.
  """
  use Supervisor

  @doc false
  def start_link(opts) do
    name = Keyword.get(opts, :name, PromptEngine)
    Supervisor.start_link(__MODULE__, Keyword.put(opts, :name, name), name: sup_name(name))
  end

  @impl true
  def init(opts) do
    name = Keyword.fetch!(opts, :name)
    size = Keyword.get(opts, :pool_size, 1)
    if not (is_integer(size) and size >= 1), do: raise(ArgumentError, "pool_size must be a positive integer, got: #{inspect(size)}")
    conns = for i <- 1..size, do: conn_name(name, i)
    :persistent_term.put({__MODULE__, name}, %{conns: List.to_tuple(conns), counter: :atomics.new(1, []), timeout: Keyword.get(opts, :timeout, 5_000)})

    conn_opts = Keyword.drop(opts, [:name, :pool_size, :max_restarts, :max_seconds])

    children =
      [{Registry, keys: :duplicate, name: registry(name)}] ++
        for {conn, i} <- Enum.with_index(conns, 1) do
          Supervisor.child_spec({PromptEngine.Connection, [name: conn, registry: registry(name), instance: name, index: i] ++ conn_opts}, id: {:connection, i})
        end

    Supervisor.init(children, strategy: :one_for_one, max_restarts: Keyword.get(opts, :max_restarts, 3), max_seconds: Keyword.get(opts, :max_seconds, 5))
  end

  @doc false
  # Round-robin, or by `route_key` so that one key always reaches the same sidecar
  # (each sidecar has its own cache: cache_put and cache_get of a key must meet).
  def pick(name, route_key \\ nil) do
    case :persistent_term.get({__MODULE__, name}, nil) do
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
    case :persistent_term.get({__MODULE__, name}, nil) do
      %{timeout: t} -> t
      nil -> 5_000
    end
  end

  @doc "The connections of an instance (for `PromptEngine.Connection.info/1`)."
  def connections(name \\ PromptEngine) do
    case :persistent_term.get({__MODULE__, name}, nil) do
      %{conns: conns} -> Tuple.to_list(conns)
      nil -> []
    end
  end

  @doc false
  def registry(name), do: Module.concat(name, Events)
  defp sup_name(name), do: Module.concat(name, Supervisor)
  defp conn_name(name, i), do: Module.concat(name, "Connection#{i}")
end
