defmodule PromptEngine.Connection do
  @moduledoc """
  One sidecar process behind an Erlang Port, owned by this GenServer.

  Modelled on Redix/Postgrex connections: the GenServer owns the port,
  callers are matched to replies by request id, and every failure reaches
  the caller as `{:error, reason}`:

    * `{:error, :timeout}` — the call's deadline passed. A `{:cancel, id}`
      frame stops the work in the sidecar and a late reply is dropped. The
      deadline is kept here, by one timer per request (the caller's
      `GenServer.call/3` only has a backstop well after it).
    * `{:error, :overloaded}` — `:max_in_flight` requests are already
      running (pass `queue: true` to wait for a slot instead, still bounded
      by the timeout).
    * `{:error, {:sidecar_exited, status}}` — the sidecar died; every
      in-flight caller gets this at once, then this process exits so its
      supervisor starts a fresh sidecar.
    * `{:error, {reason, message}}` — the op's own error (`:bad_request`,
      `:unknown_op`, ...).

  A caller that dies is monitored; its request is cancelled in the sidecar.

  Port writes use `port_command(port, data, [:nosuspend])`: when the port
  is busy the frame is queued here and retried shortly, so neither this
  process nor any caller is ever suspended on a full pipe.
  """
  use GenServer
  require Logger

  @default_timeout 5_000
  @default_max_in_flight 10_000
  @ready_timeout 20_000
  @retry_write_ms 1

  defstruct [
    :port,
    :os_pid,
    :info,
    :registry,
    :max_in_flight,
    next_id: 1,
    pending: %{},
    monitors: %{},
    waiting: :queue.new(),
    write_queue: :queue.new(),
    write_timer: nil,
    bad_frames: 0
  ]

  @doc false
  def start_link(opts) do
    GenServer.start_link(__MODULE__, opts, Keyword.take(opts, [:name]))
  end

  @doc false
  def child_spec(opts) do
    %{id: Keyword.get(opts, :id, __MODULE__), start: {__MODULE__, :start_link, [opts]}, type: :worker, restart: :permanent, shutdown: 5_000}
  end

  @doc """
  Send `op` with `args` and wait for its reply. See the module doc for the
  errors. Options: `:timeout` (ms, default #{@default_timeout}), `:queue`
  (wait for a slot when overloaded).
  """
  @spec request(GenServer.server(), atom(), map(), keyword()) :: {:ok, term()} | {:error, term()}
  def request(conn, op, args, opts \\ []) when is_atom(op) and is_map(args) do
    timeout = Keyword.get(opts, :timeout, @default_timeout)
    queue? = Keyword.get(opts, :queue, false)

    try do
      # The deadline lives in the connection; this is only a backstop for a wedged process.
      GenServer.call(conn, {:request, op, args, timeout, queue?}, timeout + 5_000)
    catch
      :exit, {:timeout, _} ->
        {:error, :timeout}

      # The connection went away without answering: the request was never sent to a
      # sidecar (accepted requests are always answered, also when the sidecar dies),
      # so it is safe for PromptEngine.call/3 to try again on the restarted connection.
      :exit, {_reason, _} ->
        {:error, :unavailable}
    end
  end

  @doc "The sidecar's OS pid and handshake info."
  @spec info(GenServer.server()) :: map()
  def info(conn), do: GenServer.call(conn, :info)

  # -- GenServer ------------------------------------------------------------

  @impl true
  def init(opts) do
    Process.flag(:trap_exit, true)
    _ = PromptEngine.Atoms.known()
    # Executable, Node, args and env are resolved at run time: PromptEngine.Sidecar.
    spec = PromptEngine.Sidecar.resolve(opts)

    if match?({:error, _}, spec) do
      {:stop, elem(spec, 1)}
    else
      {:ok, %{executable: exe, args: args, env: env}} = spec

      port =
        Port.open({:spawn_executable, exe}, [
          :binary,
          {:packet, 4},
          :exit_status,
          :nouse_stdio,
          args: args,
          env: env
        ])

      ready_timeout = Keyword.get(opts, :ready_timeout, @ready_timeout)

      # The sidecar speaks first; nothing is sent before its ready handshake.
      receive do
        {^port, {:data, data}} ->
          case safe_decode(data) do
            {:ok, {:event, :ready, info}} ->
              state = %__MODULE__{
                port: port,
                os_pid: Map.get(info, :os_pid),
                info: info,
                registry: Keyword.get(opts, :registry),
                max_in_flight: Keyword.get(opts, :max_in_flight, @default_max_in_flight)
              }

              {:ok, state}

            other ->
              Port.close(port)
              {:stop, {:bad_handshake, other}}
          end

        {^port, {:exit_status, status}} ->
          {:stop, {:sidecar_exited, status}}
      after
        ready_timeout ->
          Port.close(port)
          {:stop, :ready_timeout}
      end
    end
  end

  @impl true
  def handle_call({:request, op, args, timeout, queue?}, from, state) do
    cond do
      map_size(state.pending) < state.max_in_flight ->
        {:noreply, start_request(state, from, op, args, timeout)}

      queue? ->
        deadline = System.monotonic_time(:millisecond) + timeout
        ref = make_ref()
        Process.send_after(self(), {:waiting_timeout, ref}, timeout)
        {:noreply, %{state | waiting: :queue.in({ref, from, op, args, deadline}, state.waiting)}}

      true ->
        {:reply, {:error, :overloaded}, state}
    end
  end

  def handle_call(:info, _from, state) do
    {:reply, Map.merge(state.info, %{os_pid: state.os_pid, in_flight: map_size(state.pending), waiting: :queue.len(state.waiting), bad_frames: state.bad_frames}), state}
  end

  @impl true
  def handle_info({port, {:data, data}}, %{port: port} = state) do
    case safe_decode(data) do
      {:ok, {:reply, id, result}} -> {:noreply, complete(state, id, normalize(result))}
      {:ok, {:event, :protocol_error, payload}} ->
        Logger.warning("prompt-engine protocol error: #{inspect(payload)}")
        {:noreply, state}

      {:ok, {:event, name, payload}} ->
        dispatch_event(state, name, payload)
        {:noreply, state}

      other ->
        Logger.error("prompt-engine: undecodable frame from the sidecar: #{inspect(other)}")
        {:noreply, %{state | bad_frames: state.bad_frames + 1}}
    end
  end

  def handle_info({port, {:exit_status, status}}, %{port: port} = state) do
    Logger.error("prompt-engine sidecar (os pid #{state.os_pid}) exited with status #{status}")
    fail_all(state, {:error, {:sidecar_exited, status}})
    {:stop, {:sidecar_exited, status}, %{state | pending: %{}, waiting: :queue.new(), port: nil}}
  end

  def handle_info({:EXIT, port, reason}, %{port: port} = state) do
    fail_all(state, {:error, {:sidecar_exited, reason}})
    {:stop, {:sidecar_exited, reason}, %{state | pending: %{}, waiting: :queue.new(), port: nil}}
  end

  def handle_info({:EXIT, _other, reason}, state) when reason in [:normal, :shutdown] do
    {:noreply, state}
  end

  def handle_info({:EXIT, _parent, reason}, state) do
    {:stop, reason, state}
  end

  def handle_info({:request_timeout, id}, state) do
    case Map.pop(state.pending, id) do
      {nil, _} ->
        {:noreply, state}

      {{from, mref, _timer}, pending} ->
        Process.demonitor(mref, [:flush])
        GenServer.reply(from, {:error, :timeout})
        state = send_frame(%{state | pending: pending, monitors: Map.delete(state.monitors, mref)}, {:cancel, id})
        {:noreply, drain_waiting(state)}
    end
  end

  def handle_info({:waiting_timeout, ref}, state) do
    {expired, rest} = Enum.split_with(:queue.to_list(state.waiting), fn {r, _, _, _, _} -> r == ref end)
    for {_, from, _, _, _} <- expired, do: GenServer.reply(from, {:error, :timeout})
    {:noreply, %{state | waiting: :queue.from_list(rest)}}
  end

  def handle_info({:DOWN, mref, :process, _pid, _reason}, state) do
    case Map.pop(state.monitors, mref) do
      {nil, _} ->
        {:noreply, state}

      {id, monitors} ->
        {{_from, _mref, timer}, pending} = Map.pop(state.pending, id)
        Process.cancel_timer(timer)
        state = send_frame(%{state | pending: pending, monitors: monitors}, {:cancel, id})
        {:noreply, drain_waiting(state)}
    end
  end

  def handle_info(:retry_write, state) do
    {:noreply, flush_writes(%{state | write_timer: nil})}
  end

  def handle_info(msg, state) do
    Logger.debug("prompt-engine connection: unexpected message #{inspect(msg)}")
    {:noreply, state}
  end

  @impl true
  def terminate(_reason, %{port: port} = state) when is_port(port) do
    fail_all(state, {:error, :shutting_down})
    # Closing the port is the sidecar's EOF: it drains and exits 0 on its own.
    try do
      Port.close(port)
    catch
      _, _ -> :ok
    end

    :ok
  end

  def terminate(_reason, _state), do: :ok

  # -- internals ------------------------------------------------------------

  defp start_request(state, {pid, _} = from, op, args, timeout) do
    id = state.next_id
    mref = Process.monitor(pid)
    timer = Process.send_after(self(), {:request_timeout, id}, timeout)
    state = %{state | next_id: id + 1, pending: Map.put(state.pending, id, {from, mref, timer}), monitors: Map.put(state.monitors, mref, id)}
    send_frame(state, {:req, id, op, args})
  end

  defp complete(state, id, result) do
    case Map.pop(state.pending, id) do
      # cancelled, timed out or caller gone: a late reply is dropped
      {nil, _} ->
        state

      {{from, mref, timer}, pending} ->
        Process.cancel_timer(timer)
        Process.demonitor(mref, [:flush])
        GenServer.reply(from, result)
        drain_waiting(%{state | pending: pending, monitors: Map.delete(state.monitors, mref)})
    end
  end

  # Start queued callers while there is room; those whose deadline passed get :timeout.
  defp drain_waiting(state) do
    if map_size(state.pending) >= state.max_in_flight do
      state
    else
      case :queue.out(state.waiting) do
        {:empty, _} ->
          state

        {{:value, {_ref, from, op, args, deadline}}, rest} ->
          left = deadline - System.monotonic_time(:millisecond)
          state = %{state | waiting: rest}

          if left <= 0 do
            GenServer.reply(from, {:error, :timeout})
            drain_waiting(state)
          else
            drain_waiting(start_request(state, from, op, args, left))
          end
      end
    end
  end

  defp send_frame(state, term) do
    data = :erlang.term_to_binary(term)
    flush_writes(%{state | write_queue: :queue.in(data, state.write_queue)})
  end

  # Never suspend on a busy port: keep the frame and try again in a moment.
  defp flush_writes(%{port: nil} = state), do: state

  defp flush_writes(state) do
    case :queue.peek(state.write_queue) do
      :empty ->
        state

      {:value, data} ->
        if :erlang.port_command(state.port, data, [:nosuspend]) do
          flush_writes(%{state | write_queue: :queue.drop(state.write_queue)})
        else
          timer = state.write_timer || Process.send_after(self(), :retry_write, @retry_write_ms)
          %{state | write_timer: timer}
        end
    end
  catch
    :error, :badarg -> state
  end

  defp fail_all(state, error) do
    for {_id, {from, mref, timer}} <- state.pending do
      Process.cancel_timer(timer)
      Process.demonitor(mref, [:flush])
      GenServer.reply(from, error)
    end

    for {_ref, from, _op, _args, _deadline} <- :queue.to_list(state.waiting), do: GenServer.reply(from, error)
    :ok
  end

  defp dispatch_event(%{registry: nil}, _name, _payload), do: :ok

  defp dispatch_event(%{registry: registry}, name, payload) do
    Registry.dispatch(registry, :events, fn entries ->
      for {pid, _} <- entries, do: send(pid, {:prompt_engine_event, name, payload})
    end)
  end

  # Replies are decoded with [:safe] first. A field this client version does not list in
  # PromptEngine.Atoms (a newer sidecar) would make that fail and leave the caller waiting
  # for its timeout, so the fallback decodes without [:safe]: the sidecar is our own child
  # process and sends atoms only for its own field names, reasons and enums (text from
  # users always travels as binaries), so the atoms it can create are bounded by its code.
  defp safe_decode(data) do
    {:ok, :erlang.binary_to_term(data, [:safe])}
  rescue
    ArgumentError ->
      try do
        {:ok, :erlang.binary_to_term(data)}
      rescue
        ArgumentError -> {:error, :undecodable}
      end
  end

  defp normalize({:ok, :ok}), do: :ok
  defp normalize({:ok, _} = ok), do: ok
  defp normalize({:error, {reason, message}}) when is_atom(reason), do: {:error, {reason, message}}
  defp normalize(other), do: {:error, {:bad_reply, other}}
end
