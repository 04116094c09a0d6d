defmodule PromptEngine.Connection do
  @moduledoc """
  One sidecar process behind an Erlang Port, owned by this GenServer.

  Modelled on Redix/Postgrex connections: the GenServer owns the port,
  callers are matched to replies by request id, and every failure reaches
  the caller as `{:error, %PromptEngine.Error{}}`:

    * `:timeout` — the call's deadline passed. A `{:cancel, id}` frame stops
      the work in the sidecar and a late reply is dropped. The deadline is
      kept here, by one timer per request (the caller's `GenServer.call/3`
      only has a backstop well after it).
    * `:overloaded` — `:max_in_flight` requests are already running (pass
      `queue: true` to wait for a slot instead, still bounded by the timeout).
    * `:sidecar_exited` — the sidecar died; every in-flight caller gets this
      at once (`details` is the exit status), then this process exits so its
      supervisor starts a fresh sidecar.
    * the op's own `{reason, message}` (`:bad_request`, `:unknown_op`, ...).

  A caller that dies is monitored; its request is cancelled in the sidecar.

  ## Start: the handshake runs after `init/1`

  `init/1` only checks the executable; the sidecar is spawned in
  `handle_continue/2` and its `{:event, :ready, info}` handshake arrives as
  an ordinary message, so a slow sidecar start (a first `npm run build`, a
  cold disk) never blocks the supervisor that starts us. Calls arriving
  before the handshake wait in the same queue as `queue: true` callers,
  each bounded by its own timeout, and are sent the moment the sidecar is
  ready; if it never becomes ready they get the error that stopped it.

  ## Frames and logs are kept apart

  The Port runs with `:nouse_stdio` and the sidecar with `--port-fds`:
  frames travel only on fds 3/4 (`{:packet, 4}`), so nothing the sidecar or
  a library prints can corrupt them. Its stderr carries pino JSON lines. An
  Erlang Port reads a single stream from its program, so stderr cannot be a
  second stream of this Port; instead the sidecar is started through
  `/bin/sh -c 'exec "$@" 2>FIFO'` (exec: the Port's OS pid is the sidecar's,
  signals and exit status are unchanged) and `PromptEngine.LogRelay` reads
  that FIFO with `cat` in its own process and hands each line to Logger.
  Logs therefore never wait behind replies in this process's mailbox, and a
  log storm cannot slow replies down. The sidecar's side opens the FIFO
  read-write, so its start never waits for the reader; the relay unlinks
  the FIFO as soon as both ends are open. With `capture_stderr: false`, or where `mkfifo` is missing, the
  sidecar inherits the VM's stderr as before.

  Port writes use `port_command(port, data, [:nosuspend])`: when the port
  is busy the frame is queued here and retried shortly, so neither this
  process nor any caller is ever suspended on a full pipe.
  """
  use GenServer
  require Logger

  alias PromptEngine.Error

  @default_timeout 5_000
  @default_max_in_flight 10_000
  @ready_timeout 20_000
  @retry_write_ms 1

  defstruct [
    :port,
    :os_pid,
    :info,
    :registry,
    :instance,
    :max_in_flight,
    :ready_timer,
    :fifo,
    :log_relay,
    :spawn,
    status: :starting,
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
  Send `op` with `args` to this connection's sidecar and wait for its reply.
  `PromptEngine.call/3` picks the connection for you; use this only to
  address one sidecar of a pool. See the module doc for the errors.
  Options: `:timeout` (ms, default #{@default_timeout}), `:queue` (wait for
  a slot when overloaded).

      iex> [conn | _] = PromptEngine.Supervisor.connections(PromptEngine)
      iex> {:ok, %{status: "ok"}} = PromptEngine.Connection.request(conn, :health, %{})
  """
  @spec request(GenServer.server(), atom(), map(), keyword()) :: :ok | {:ok, term()} | {:error, Error.t()}
  def request(conn, op, args, opts \\ []) when is_atom(op) and is_map(args) do
    timeout = Keyword.get(opts, :timeout, @default_timeout)
    queue? = Keyword.get(opts, :queue, false)

    try do
      # The deadline lives in the connection; this is only a backstop for a wedged process.
      GenServer.call(conn, {:request, op, args, timeout, queue?}, timeout + 5_000)
    catch
      :exit, {:timeout, _} ->
        {:error, Error.new(:timeout, "no reply from the connection within #{timeout + 5_000} ms", op: op)}

      # The connection went away without answering: the request was never sent to a
      # sidecar (accepted requests are always answered, also when the sidecar dies),
      # so it is safe for PromptEngine.call/3 to try again on the restarted connection.
      :exit, {_reason, _} ->
        {:error, Error.new(:unavailable, "the sidecar connection is restarting", op: op, details: :restarting)}
    end
  end

  @doc """
  The sidecar's OS pid, its handshake info and the connection's counters.

      iex> [conn | _] = PromptEngine.Supervisor.connections(PromptEngine)
      iex> %{os_pid: _, in_flight: 0} = PromptEngine.Connection.info(conn)
  """
  @spec info(GenServer.server()) :: map()
  def info(conn), do: GenServer.call(conn, :info)

  # -- GenServer ------------------------------------------------------------

  @impl true
  def init(opts) do
    Process.flag(:trap_exit, true)
    _ = PromptEngine.Atoms.known()
    # Executable, Node, args and env are resolved at run time: PromptEngine.Sidecar. Only that
    # (cheap, and a misconfiguration should fail the start itself) happens in init/1.
    case PromptEngine.Sidecar.resolve(opts) do
      {:error, {reason, message}} ->
        {:stop, Error.new(reason, message)}

      {:ok, %{executable: exe, args: args, env: env}} ->
        state = %__MODULE__{
          instance: Keyword.get(opts, :instance),
          registry: Keyword.get(opts, :registry),
          max_in_flight: Keyword.get(opts, :max_in_flight, @default_max_in_flight),
          spawn: %{
            exe: exe,
            args: args,
            env: env,
            capture_stderr: Keyword.get(opts, :capture_stderr, true),
            ready_timeout: Keyword.get(opts, :ready_timeout, @ready_timeout)
          }
        }

        {:ok, state, {:continue, :spawn}}
    end
  end

  @impl true
  def handle_continue(:spawn, %{spawn: spawn} = state) do
    {exe, args, fifo, relay} = with_stderr_capture(spawn, state.instance)

    try do
      Port.open({:spawn_executable, exe}, [:binary, {:packet, 4}, :exit_status, :nouse_stdio, args: args, env: spawn.env])
    rescue
      e in ErlangError ->
        if relay, do: PromptEngine.LogRelay.stop(relay)
        error = Error.new(:spawn_failed, "could not start the sidecar #{spawn.exe}: #{inspect(e.original)}", details: e.original)
        fail_all(state, {:error, error})
        {:stop, error, %{state | waiting: :queue.new()}}
    else
      port ->
        # The sidecar speaks first; nothing is sent before its ready handshake.
        {:os_pid, os_pid} = Port.info(port, :os_pid)
        timer = Process.send_after(self(), :ready_timeout, spawn.ready_timeout)
        {:noreply, %{state | port: port, os_pid: os_pid, fifo: fifo, log_relay: relay, ready_timer: timer}}
    end
  end

  defp with_stderr_capture(%{capture_stderr: false} = spawn, _instance), do: {spawn.exe, spawn.args, nil, nil}

  defp with_stderr_capture(spawn, instance) do
    with fifo when is_binary(fifo) <- make_fifo(),
         sh when is_binary(sh) <- System.find_executable("sh"),
         {:ok, relay} <- PromptEngine.LogRelay.start(fifo, instance: instance) do
      # `2<>` opens the FIFO read-write, which never blocks (a write-only open would wait for
      # cat, forever if cat is gone); `-p`: never create a regular file if the FIFO was removed.
      {sh, ["-c", ~s([ -p "$0" ] && exec "$@" 2<>"$0"; exec "$@"), fifo, spawn.exe | spawn.args], fifo, relay}
    else
      _ ->
        Logger.warning("prompt-engine: could not set up stderr capture (mkfifo, sh or cat missing): sidecar logs go to the VM's stderr")
        {spawn.exe, spawn.args, nil, nil}
    end
  end

  defp make_fifo do
    path = Path.join(System.tmp_dir!(), "prompt-engine-#{System.pid()}-#{System.unique_integer([:positive])}.stderr")

    with mkfifo when is_binary(mkfifo) <- System.find_executable("mkfifo"),
         {_, 0} <- System.cmd(mkfifo, ["-m", "600", path], stderr_to_stdout: true) do
      path
    else
      _ -> nil
    end
  end

  @impl true
  def handle_call({:request, op, args, timeout, queue?}, from, state) do
    cond do
      # Before the handshake every call waits, within its own timeout, for the sidecar.
      state.status == :starting ->
        {:noreply, enqueue(state, from, op, args, timeout)}

      map_size(state.pending) < state.max_in_flight ->
        {:noreply, start_request(state, from, op, args, timeout)}

      queue? ->
        {:noreply, enqueue(state, from, op, args, timeout)}

      true ->
        {:reply, {:error, Error.new(:overloaded, "#{state.max_in_flight} requests already in flight on this sidecar (max_in_flight); pass queue: true to wait", op: op)}, state}
    end
  end

  def handle_call(:info, _from, state) do
    {:reply, Map.merge(state.info || %{}, %{os_pid: state.os_pid, status: state.status, in_flight: map_size(state.pending), waiting: :queue.len(state.waiting), bad_frames: state.bad_frames}), state}
  end

  @impl true
  def handle_info({port, {:data, data}}, %{port: port, status: :starting} = state) do
    case safe_decode(data) do
      {:ok, {:event, :ready, info}} ->
        Process.cancel_timer(state.ready_timer)
        state = %{state | status: :ready, info: info, os_pid: Map.get(info, :os_pid, state.os_pid), ready_timer: nil, fifo: nil}
        {:noreply, drain_waiting(state)}

      other ->
        stop_starting(state, Error.new(:bad_handshake, "the sidecar did not start with a ready handshake: #{inspect(other, limit: 10)}", details: other))
    end
  end

  def handle_info({port, {:data, data}}, %{port: port} = state) do
    case safe_decode(data) do
      {:ok, {:reply, id, result}} ->
        {:noreply, complete(state, id, result)}

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

  def handle_info(:ready_timeout, %{status: :starting} = state) do
    ms = state.spawn.ready_timeout
    stop_starting(state, Error.new(:unavailable, "the sidecar did not send its ready handshake within #{ms} ms (ready_timeout)"))
  end

  def handle_info({port, {:exit_status, status}}, %{port: port} = state) do
    Logger.error("prompt-engine sidecar (os pid #{state.os_pid}) exited with status #{status}")
    error = exited(status)
    fail_all(state, {:error, error})
    {:stop, {:sidecar_exited, status}, %{state | pending: %{}, waiting: :queue.new(), port: nil}}
  end

  def handle_info({:EXIT, port, reason}, %{port: port} = state) do
    fail_all(state, {:error, exited(reason)})
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

      {{from, mref, _timer, op, timeout}, pending} ->
        Process.demonitor(mref, [:flush])
        GenServer.reply(from, {:error, Error.new(:timeout, "no reply within #{timeout} ms; the request was cancelled in the sidecar", op: op)})
        state = send_frame(%{state | pending: pending, monitors: Map.delete(state.monitors, mref)}, {:cancel, id})
        {:noreply, drain_waiting(state)}
    end
  end

  def handle_info({:waiting_timeout, ref}, state) do
    {expired, rest} = Enum.split_with(:queue.to_list(state.waiting), fn {r, _, _, _, _} -> r == ref end)
    for {_, from, op, _, _} <- expired, do: GenServer.reply(from, {:error, waited_too_long(state, op)})
    {:noreply, %{state | waiting: :queue.from_list(rest)}}
  end

  def handle_info({:DOWN, mref, :process, _pid, _reason}, state) do
    case Map.pop(state.monitors, mref) do
      {nil, _} ->
        {:noreply, state}

      {id, monitors} ->
        {{_from, _mref, timer, _op, _timeout}, pending} = Map.pop(state.pending, id)
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
    fail_all(state, {:error, Error.new(:shutting_down, "the prompt-engine instance is shutting down")})
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
    state = %{state | next_id: id + 1, pending: Map.put(state.pending, id, {from, mref, timer, op, timeout}), monitors: Map.put(state.monitors, mref, id)}
    send_frame(state, {:req, id, op, args})
  end

  defp complete(state, id, result) do
    case Map.pop(state.pending, id) do
      # cancelled, timed out or caller gone: a late reply is dropped
      {nil, _} ->
        state

      {{from, mref, timer, op, _timeout}, pending} ->
        Process.cancel_timer(timer)
        Process.demonitor(mref, [:flush])
        GenServer.reply(from, normalize(result, op))
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
            GenServer.reply(from, {:error, waited_too_long(state, op)})
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
    for {_id, {from, mref, timer, _op, _timeout}} <- state.pending do
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

  defp normalize({:ok, :ok}, _op), do: :ok
  defp normalize({:ok, _} = ok, _op), do: ok
  defp normalize({:error, {reason, message}}, op) when is_atom(reason) and is_binary(message), do: {:error, Error.new(reason, message, op: op)}
  defp normalize(other, op), do: {:error, Error.new(:bad_reply, "the sidecar sent a reply of an unknown shape: #{inspect(other, limit: 10)}", op: op, details: other)}

  defp enqueue(state, from, op, args, timeout) do
    deadline = System.monotonic_time(:millisecond) + timeout
    ref = make_ref()
    Process.send_after(self(), {:waiting_timeout, ref}, timeout)
    %{state | waiting: :queue.in({ref, from, op, args, deadline}, state.waiting)}
  end

  defp waited_too_long(%{status: :starting}, op),
    do: Error.new(:timeout, "the sidecar was still starting when the call's timeout passed (see ready_timeout)", op: op)

  defp waited_too_long(_state, op),
    do: Error.new(:timeout, "no free slot on the sidecar (max_in_flight) before the call's timeout", op: op)

  defp exited(status) when is_integer(status),
    do: Error.new(:sidecar_exited, "the sidecar exited with status #{status} before replying; it is being restarted", details: status)

  defp exited(reason),
    do: Error.new(:sidecar_exited, "the sidecar's port closed (#{inspect(reason)}) before replying; it is being restarted", details: reason)

  # The handshake failed: callers waiting for it get the reason, the supervisor restarts us.
  defp stop_starting(state, error) do
    if state.ready_timer, do: Process.cancel_timer(state.ready_timer)
    fail_all(state, {:error, error})

    try do
      Port.close(state.port)
    catch
      _, _ -> :ok
    end

    {:stop, error, %{state | port: nil, waiting: :queue.new()}}
  end
end
