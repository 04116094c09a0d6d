defmodule PromptEngine.Connection do
  @moduledoc """
  One sidecar process behind an Erlang Port, owned by this GenServer for as
  long as the instance lives.

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
      at once (`details` is the exit status).
    * `:unavailable` — the sidecar is being restarted and will not be up
      within the call's timeout; the message says how many restarts in a row,
      the last exit status and when the next start is (`details`:
      `%{restarts: n, last_exit: status}`).
    * the op's own `{reason, message}` (`:bad_request`, `:unknown_op`, ...).

  A caller that dies is monitored; its request is cancelled in the sidecar.

  ## Restarts: backoff, never giving up while the instance lives

  A sidecar that exits (or does not complete its handshake within
  `ready_timeout`) is restarted by this process itself, like Redix
  reconnects: after `backoff_initial` ms (100), doubling on every restart in
  a row up to `backoff_max` (10_000 ms). A sidecar that stayed up for
  `backoff_max` ms ends the streak: the next restart waits `backoff_initial`
  again. Calls made meanwhile wait in the queue within their own timeout
  and are sent the moment a sidecar is ready; one whose deadline comes
  before the next start is answered `:unavailable` at once, with the truth.
  `max_restarts` (default `:infinity`) bounds the restarts in a row; past
  it the connection gives up (calls get `:unavailable` saying so). Each
  start, exit, restart and give-up is a `:telemetry` event
  (`PromptEngine.Telemetry`) and a log line.

  ## Start: the handshake runs after `init/1`

  `init/1` only checks the executable; the sidecar is spawned in
  `handle_continue/2` and its `{:event, :ready, info}` handshake arrives as
  an ordinary message, so a slow sidecar start never blocks the supervisor
  that starts us (`PromptEngine.Lifecycle` waits for every sidecar of the
  pool at once). Calls arriving before the handshake wait in the same queue
  as `queue: true` callers, each bounded by its own timeout. The sidecar
  opens its store and loads its scorer before the handshake, so a ready
  sidecar answers the first `choose_prompt`, `score` and `track_execution`
  at once.

  ## No secret in any state

  The sidecar's environment (`DATABASE_URL` with its password,
  `LLM_API_KEY`, the dashboard token) is kept sealed in a function
  (`PromptEngine.Redact`): `:sys.get_state/1`, crash reports and
  `GenServer` terminate reports never show it, and `format_status/1` shows a
  redacted view. The sidecar's log lines are redacted too (`PromptEngine.LogRelay`).

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

  Replies are decoded with `binary_to_term(data, [:safe])`: every atom the
  sidecar sends is known in advance (`PromptEngine.Atoms`, generated from its
  op table). A reply holding an atom this client does not know is decoded
  with that atom as a string (`PromptEngine.Term`), counted in `info/1` as
  `unknown_atoms` and logged once; no atom is ever created from a frame.
  """
  use GenServer
  require Logger

  alias PromptEngine.{Error, Redact, Telemetry}

  @default_timeout 5_000
  @default_max_in_flight 10_000
  @ready_timeout 60_000
  @backoff_initial 100
  @backoff_max 10_000
  @retry_write_ms 1
  @max_logged_atoms 100
  # What `info/1` reports of the connection's own state, as it is kept (beside in_flight and waiting, counted
  # from it): a connection that is down answers the same keys, nil.
  @info_fields [:os_pid, :status, :restarts, :total_restarts, :last_exit, :bad_frames, :unknown_atoms]

  defstruct [
    :port,
    :os_pid,
    :info,
    :registry,
    :instance,
    :index,
    :ready_slot,
    :max_in_flight,
    :ready_timer,
    :fifo,
    :log_relay,
    :spawn,
    :spawned_at,
    :ready_at,
    :next_start_at,
    :respawn_timer,
    :delay,
    :last_exit,
    :last_why,
    :first_error,
    telemetry: false,
    status: :starting,
    restarts: 0,
    total_restarts: 0,
    max_restarts: :infinity,
    backoff_initial: @backoff_initial,
    backoff_max: @backoff_max,
    ever_ready: false,
    ready_waiters: [],
    next_id: 1,
    pending: %{},
    monitors: %{},
    # Ids of requests whose callers were answered (timeout, caller gone) and that the sidecar, told to cancel
    # them, may still run: they hold a slot of its max in-flight until their (dropped) reply comes back.
    cancelled: MapSet.new(),
    # Callers waiting for the sidecar or for a free slot, at most max_in_flight of them: their order
    # (refs) and each one's entry by ref, so a timeout finds its caller without a scan; a ref whose
    # caller left (timed out, failed) is skipped when the queue is drained.
    waiting: :queue.new(),
    waiting_entries: %{},
    write_queue: :queue.new(),
    write_timer: nil,
    bad_frames: 0,
    unknown_atoms: 0,
    logged_atoms: MapSet.new()
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
    # What a timeout's message names: the caller's own timeout, of which `timeout` may be what was left
    # when it got here (PromptEngine.call counts the deadline from its own start). Internal.
    given = Keyword.get(opts, :caller_timeout, timeout)

    case PromptEngine.Args.timeout_problem(timeout) do
      nil -> call(conn, op, args, timeout, queue?, given)
      problem -> {:error, Error.new(:bad_request, problem, op: op)}
    end
  end

  defp call(conn, op, args, timeout, queue?, given) do
    try do
      # The deadline lives in the connection; this is only a backstop for a wedged process.
      GenServer.call(conn, {:request, op, args, timeout, queue?, given}, timeout + 5_000)
    catch
      :exit, {:timeout, _} ->
        {:error, Error.new(:timeout, "no reply from the connection within #{timeout + 5_000} ms", op: op)}

      # The connection process was not running (being restarted by its supervisor, or the
      # instance is stopping): the request was never sent to a sidecar, so it may be sent again.
      :exit, {:noproc, _} ->
        {:error, Error.new(:unavailable, "the sidecar's connection process is not running (it is being restarted)", op: op, details: :connection_down)}

      # It ended while the request was with it: the request may have reached the sidecar (which
      # finishes what it holds), so it is not sent again; the caller decides.
      :exit, {_reason, _} ->
        {:error,
         Error.new(:unavailable, "the sidecar's connection process ended while the request was in flight; it may have run", op: op, details: :connection_crashed)}
    end
  end

  @doc """
  The sidecar's OS pid, its handshake info and the connection's state and
  counters: `status` (`:starting`, `:ready`, `:backoff`, `:gave_up`),
  `restarts` (in a row), `total_restarts`, `last_exit`, `in_flight`,
  `waiting`, `bad_frames`, `unknown_atoms`. A connection process that is not
  running (being restarted by its supervisor, or its instance stopped), or
  does not answer within 5 s, gives `status: :down` and nil for what only it
  knows: the caller never exits.

      iex> [conn | _] = PromptEngine.Supervisor.connections(PromptEngine)
      iex> %{os_pid: _, in_flight: 0, status: :ready} = PromptEngine.Connection.info(conn)
  """
  @spec info(GenServer.server()) :: map()
  def info(conn) do
    GenServer.call(conn, :info)
  catch
    :exit, _ -> @info_fields |> Map.new(&{&1, nil}) |> Map.merge(%{status: :down, in_flight: 0, waiting: 0})
  end

  @doc false
  # :ok once the sidecar has completed its handshake; the error when its first start failed.
  @spec await_ready(GenServer.server(), timeout()) :: :ok | {:error, Error.t()}
  def await_ready(conn, timeout) do
    GenServer.call(conn, :await_ready, timeout)
  catch
    :exit, reason -> {:error, Error.new(:unavailable, "the sidecar did not become ready: #{inspect(reason, limit: 5)}")}
  end

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
          index: Keyword.get(opts, :index, 1),
          registry: Keyword.get(opts, :registry),
          ready_slot: {Keyword.get(opts, :ready), Keyword.get(opts, :index, 1)},
          telemetry: Keyword.get(opts, :telemetry, false),
          max_in_flight: Keyword.get(opts, :max_in_flight, @default_max_in_flight),
          max_restarts: Keyword.get(opts, :max_restarts, :infinity),
          backoff_initial: Keyword.get(opts, :backoff_initial, @backoff_initial),
          backoff_max: Keyword.get(opts, :backoff_max, @backoff_max),
          spawn: %{
            exe: exe,
            # Sealed like the environment: a flag may carry a URL with its password (`--database-url`).
            args: Redact.seal(args),
            env: Redact.seal(env),
            # What the sidecar's log lines are masked for: its own environment and what it inherits from the VM's
            # (where `DATABASE_URL` and `LLM_API_KEY` usually are).
            secrets: Redact.seal(Redact.secrets(Enum.to_list(System.get_env()) ++ env)),
            capture_stderr: Keyword.get(opts, :capture_stderr, true),
            ready_timeout: Keyword.get(opts, :ready_timeout, @ready_timeout)
          }
        }

        {:ok, state, {:continue, :spawn}}
    end
  end

  @impl true
  def handle_continue(:spawn, state), do: {:noreply, spawn_sidecar(state)}

  defp spawn_sidecar(%{spawn: spawn} = state) do
    {exe, args, fifo, relay} = with_stderr_capture(spawn, state.instance)
    state = %{state | status: :starting, spawned_at: System.monotonic_time(), respawn_timer: nil, next_start_at: nil}

    try do
      Port.open({:spawn_executable, exe}, [:binary, {:packet, 4}, :exit_status, :nouse_stdio, args: args, env: Redact.unseal(spawn.env)])
    rescue
      # ErlangError (:enoent, :eacces, ...) or ArgumentError (what the options cannot hold): never its
      # arguments, which carry the environment and its secrets.
      e ->
        if relay, do: PromptEngine.LogRelay.stop(relay)
        why = with %ErlangError{original: original} <- e, do: original, else: (_ -> :badarg)
        down(state, {:spawn_failed, why}, "could not start the sidecar #{spawn.exe}: #{inspect(why)}")
    else
      port ->
        # The sidecar speaks first; nothing is sent before its ready handshake.
        {:os_pid, os_pid} = Port.info(port, :os_pid)
        timer = Process.send_after(self(), {:ready_timeout, port}, spawn.ready_timeout)
        %{state | port: port, os_pid: os_pid, fifo: fifo, log_relay: relay, ready_timer: timer}
    end
  end

  defp with_stderr_capture(%{capture_stderr: false} = spawn, _instance), do: {spawn.exe, Redact.unseal(spawn.args), nil, nil}

  defp with_stderr_capture(spawn, instance) do
    with fifo when is_binary(fifo) <- make_fifo(),
         sh when is_binary(sh) <- System.find_executable("sh"),
         {:ok, relay} <- PromptEngine.LogRelay.start(fifo, instance: instance, secrets: spawn.secrets) do
      # `2<>` opens the FIFO read-write, which never blocks (a write-only open would wait for
      # cat, forever if cat is gone); `-p`: never create a regular file if the FIFO was removed.
      {sh, ["-c", ~s([ -p "$0" ] && exec "$@" 2<>"$0"; exec "$@"), fifo, spawn.exe | Redact.unseal(spawn.args)], fifo, relay}
    else
      _ ->
        Logger.warning("prompt-engine: could not set up stderr capture (mkfifo, sh or cat missing): sidecar logs go to the VM's stderr")
        {spawn.exe, Redact.unseal(spawn.args), nil, nil}
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
  def handle_call({:request, op, args, timeout, queue?, given}, from, state) do
    case state.status do
      :ready ->
        cond do
          running(state) < state.max_in_flight ->
            {:noreply, start_request(state, from, op, args, timeout, given)}

          queue? ->
            enqueue(state, from, op, args, timeout, given)

          true ->
            {:reply,
             {:error,
              Error.new(
                :overloaded,
                "#{state.max_in_flight} requests already in flight on this sidecar (max_in_flight#{cancelled_note(state)}); pass queue: true to wait",
                op: op
              )}, state}
        end

      # Before the handshake every call waits, within its own timeout, for the sidecar.
      :starting ->
        enqueue(state, from, op, args, timeout, given)

      # A restart is scheduled: wait for it if it comes before the deadline, else say so now.
      :backoff ->
        if state.next_start_at < now_ms() + timeout,
          do: enqueue(state, from, op, args, timeout, given),
          else: {:reply, {:error, unavailable(state, op)}, state}

      :gave_up ->
        {:reply, {:error, unavailable(state, op)}, state}
    end
  end

  def handle_call(:info, _from, state) do
    info =
      (state.info || %{})
      |> Map.merge(Map.take(state, @info_fields))
      |> Map.merge(%{in_flight: map_size(state.pending), waiting: map_size(state.waiting_entries)})

    {:reply, info, state}
  end

  def handle_call(:await_ready, from, state) do
    cond do
      state.status == :ready -> {:reply, :ok, state}
      state.first_error != nil -> {:reply, {:error, state.first_error}, state}
      true -> {:noreply, %{state | ready_waiters: [from | state.ready_waiters]}}
    end
  end

  @impl true
  def handle_info({port, {:data, data}}, %{port: port, status: :starting} = state) do
    case decode(data, state) do
      {{:ok, {:event, :ready, info}}, state} -> {:noreply, ready(state, info)}
      {other, state} -> {:noreply, down(state, :bad_handshake, "the sidecar did not start with a ready handshake: #{inspect(other, limit: 10)}", kill: true)}
    end
  end

  def handle_info({port, {:data, data}}, %{port: port} = state) do
    case decode(data, state) do
      {{:ok, {:reply, id, result}}, state} ->
        {:noreply, complete(state, id, result)}

      {{:ok, {:event, :protocol_error, payload}}, state} ->
        Logger.warning("prompt-engine protocol error: #{inspect(payload)}")
        {:noreply, state}

      {{:ok, {:event, name, payload}}, state} ->
        dispatch_event(state, name, payload)
        {:noreply, state}

      {other, state} ->
        Logger.error("prompt-engine: undecodable frame from the sidecar: #{inspect(other, limit: 10)}")
        {:noreply, %{state | bad_frames: state.bad_frames + 1}}
    end
  end

  def handle_info({:ready_timeout, port}, %{status: :starting, port: port} = state) do
    ms = state.spawn.ready_timeout
    {:noreply, down(state, :ready_timeout, "the sidecar did not send its ready handshake within #{ms} ms (ready_timeout)", kill: true)}
  end

  def handle_info({port, {:exit_status, status}}, %{port: port} = state) do
    {:noreply, down(state, status, nil)}
  end

  def handle_info({:EXIT, port, reason}, %{port: port} = state) do
    {:noreply, down(state, reason, nil)}
  end

  # Ports this process opened and no longer owns: an earlier sidecar's, System.cmd's.
  def handle_info({:EXIT, port, _reason}, state) when is_port(port), do: {:noreply, state}

  def handle_info(:respawn, %{status: :backoff} = state) do
    state = %{state | total_restarts: state.total_restarts + 1}

    Telemetry.sidecar(state.telemetry, :restarted, %{delay: state.delay}, %{
      instance: state.instance,
      index: state.index,
      attempt: state.restarts,
      restarts: state.total_restarts,
      last_exit: state.last_exit
    })

    {:noreply, spawn_sidecar(state)}
  end

  def handle_info({:request_timeout, id}, state) do
    case Map.pop(state.pending, id) do
      {nil, _} ->
        {:noreply, state}

      {{from, mref, _timer, op, timeout}, pending} ->
        Process.demonitor(mref, [:flush])
        GenServer.reply(from, {:error, Error.new(:timeout, "no reply within #{timeout} ms; the request was cancelled in the sidecar", op: op)})
        state = %{state | pending: pending, monitors: Map.delete(state.monitors, mref), cancelled: MapSet.put(state.cancelled, id)}
        {:noreply, send_frame(state, {:cancel, id})}
    end
  end

  def handle_info({:waiting_timeout, ref}, state) do
    case Map.pop(state.waiting_entries, ref) do
      {nil, _} ->
        {:noreply, state}

      {{from, op, _args, _deadline, _timer, _timeout}, entries} ->
        GenServer.reply(from, {:error, waited_too_long(state, op)})
        {:noreply, %{state | waiting_entries: entries}}
    end
  end

  def handle_info({:DOWN, mref, :process, _pid, _reason}, state) do
    case Map.pop(state.monitors, mref) do
      {nil, _} ->
        {:noreply, state}

      {id, monitors} ->
        {{_from, _mref, timer, _op, _timeout}, pending} = Map.pop(state.pending, id)
        Process.cancel_timer(timer)
        state = %{state | pending: pending, monitors: monitors, cancelled: MapSet.put(state.cancelled, id)}
        {:noreply, send_frame(state, {:cancel, id})}
    end
  end

  def handle_info(:retry_write, state) do
    {:noreply, flush_writes(%{state | write_timer: nil})}
  end

  # The exit of a port this connection has already given up on, a stale timer.
  def handle_info(msg, state) do
    Logger.debug("prompt-engine connection: unexpected message #{inspect(msg, limit: 5)}")
    {:noreply, state}
  end

  @impl true
  def terminate(_reason, state) do
    PromptEngine.Supervisor.set_ready(state.ready_slot, false)
    fail_all(state, {:error, Error.new(:shutting_down, "the prompt-engine instance is shutting down")})

    # Closing the port is the sidecar's EOF: it drains and exits 0 on its own.
    if is_port(state.port) do
      try do
        Port.close(state.port)
      catch
        _, _ -> :ok
      end
    end

    :ok
  end

  @doc false
  # What crash reports and :sys.get_status/1 show: the state's shape with secrets redacted
  # (the raw state holds them sealed; this is a view for people).
  def format_status(%{state: state} = status), do: %{status | state: redacted(state)}
  def format_status(status), do: status

  @impl true
  def format_status(_reason, [_pdict, state]), do: [data: [{~c"State", redacted(state)}]]

  defp redacted(%__MODULE__{} = s) do
    %{
      instance: s.instance,
      index: s.index,
      status: s.status,
      os_pid: s.os_pid,
      restarts: s.restarts,
      total_restarts: s.total_restarts,
      last_exit: s.last_exit,
      in_flight: map_size(s.pending),
      waiting: map_size(s.waiting_entries),
      executable: s.spawn.exe,
      args: Enum.map(Redact.unseal(s.spawn.args), &Redact.text/1),
      env: Redact.env(Redact.unseal(s.spawn.env))
    }
  end

  defp redacted(other), do: other

  # -- lifecycle ------------------------------------------------------------

  defp ready(state, info) do
    Process.cancel_timer(state.ready_timer)
    t = System.monotonic_time()
    os_pid = Map.get(info, :os_pid, state.os_pid)
    PromptEngine.Supervisor.set_ready(state.ready_slot, true)

    Telemetry.sidecar(state.telemetry, :started, %{duration: t - state.spawned_at}, %{
      instance: state.instance,
      index: state.index,
      os_pid: os_pid,
      restarts: state.total_restarts
    })

    if state.total_restarts > 0,
      do: Logger.info("prompt-engine sidecar #{state.index} of #{inspect(state.instance)} is up again (os pid #{os_pid}, restart #{state.total_restarts})")

    for from <- state.ready_waiters, do: GenServer.reply(from, :ok)
    state = %{state | status: :ready, info: info, os_pid: os_pid, ready_timer: nil, fifo: nil, ready_at: now_ms(), ever_ready: true, ready_waiters: []}
    drain_waiting(state)
  end

  # The sidecar exited, or failed to start: answer its in-flight callers, then restart it
  # after the backoff delay (or give up past max_restarts). Waiting callers stay queued
  # when the next start comes before their deadline.
  defp down(state, status, why, opts \\ []) do
    if state.ready_timer, do: Process.cancel_timer(state.ready_timer)
    if opts[:kill], do: kill(state)
    PromptEngine.Supervisor.set_ready(state.ready_slot, false)
    uptime = if state.status == :ready and state.ready_at, do: now_ms() - state.ready_at, else: 0
    # A sidecar that stayed up long enough ends the streak of restarts.
    restarts = if uptime >= state.backoff_max, do: 1, else: state.restarts + 1
    give_up? = state.max_restarts != :infinity and restarts > state.max_restarts
    # The relay ends on the sidecar's EOF; one whose FIFO was never opened (a sidecar killed
    # at spawn) would wait forever: it is told to give up after a grace period.
    if state.log_relay, do: PromptEngine.LogRelay.stop_after(state.log_relay)
    state = %{state | port: nil, ready_timer: nil, log_relay: nil, last_exit: status, last_why: describe_exit(status, why), restarts: restarts}
    failed = map_size(state.pending)

    exited = exited(state, status, give_up?)
    fail_pending(state, {:error, exited})
    # Frames still queued for the dead sidecar are dropped: their callers were just answered,
    # and a new sidecar must not run what its caller was told failed.
    if state.write_timer, do: Process.cancel_timer(state.write_timer)
    state = %{state | pending: %{}, monitors: %{}, cancelled: MapSet.new(), write_queue: :queue.new(), write_timer: nil}

    Telemetry.sidecar(state.telemetry, :exited, %{uptime: uptime}, %{
      instance: state.instance,
      index: state.index,
      os_pid: state.os_pid,
      status: status,
      failed: failed
    })

    # The instance's start waits for the first handshake (sync_start): a first start that fails fails it.
    state =
      if not state.ever_ready and state.first_error == nil do
        first = Error.new(first_reason(status), first_message(state, status, why), details: status)
        for from <- state.ready_waiters, do: GenServer.reply(from, {:error, first})
        %{state | first_error: first, ready_waiters: []}
      else
        state
      end

    if give_up? do
      Logger.error(
        "prompt-engine sidecar #{state.index} of #{inspect(state.instance)} (os pid #{state.os_pid}) #{describe_exit(status, why)}; giving up after #{restarts - 1} restarts in a row (max_restarts: #{state.max_restarts})"
      )

      Telemetry.sidecar(state.telemetry, :gave_up, %{}, %{instance: state.instance, index: state.index, restarts: restarts - 1, last_exit: status})
      state = %{state | status: :gave_up}
      fail_waiting(state, fn op -> unavailable(state, op) end)
      %{state | waiting: :queue.new(), waiting_entries: %{}}
    else
      delay = backoff(state)

      Logger.error(
        "prompt-engine sidecar #{state.index} of #{inspect(state.instance)} (os pid #{state.os_pid}) #{describe_exit(status, why)}; restarting it in #{delay} ms (restart #{restarts} in a row)"
      )

      timer = Process.send_after(self(), :respawn, delay)
      state = %{state | status: :backoff, next_start_at: now_ms() + delay, respawn_timer: timer, delay: delay}
      expire_waiting_before(state, state.next_start_at)
    end
  end

  # restarts in a row: 1 -> initial, 2 -> 2 x initial, ... capped at backoff_max
  defp backoff(state) do
    min(state.backoff_initial * Integer.pow(2, max(state.restarts - 1, 0) |> min(30)), state.backoff_max)
  end

  defp kill(%{port: port, os_pid: os_pid}) do
    if is_port(port) do
      try do
        Port.close(port)
      catch
        _, _ -> :ok
      end
    end

    # A sidecar that is not ready is not serving anything: do not wait for it to notice the EOF.
    if is_integer(os_pid), do: PromptEngine.Sidecar.signal(os_pid, "-9")
    :ok
  end

  defp first_reason(status) when is_integer(status), do: :sidecar_exited
  defp first_reason({:spawn_failed, _}), do: :spawn_failed
  defp first_reason(:bad_handshake), do: :bad_handshake
  defp first_reason(_), do: :unavailable

  defp first_message(state, status, why) do
    "the prompt-engine sidecar #{state.index} of #{inspect(state.instance)} #{describe_exit(status, why)}" <>
      if(is_integer(status), do: " before its ready handshake (its last log lines say why)", else: "")
  end

  defp describe_exit(status, nil) when is_integer(status), do: "exited with status #{status}"
  defp describe_exit(status, nil), do: "stopped (#{inspect(status, limit: 5)})"
  defp describe_exit(_status, why), do: "failed: #{why}"

  defp exited(state, status, give_up?) do
    next = if give_up?, do: "it is not restarted (max_restarts)", else: "it is being restarted (restart #{state.restarts} in a row)"

    message =
      if is_integer(status),
        do: "the sidecar exited with status #{status} before replying; #{next}",
        else: "the sidecar's port closed (#{inspect(status, limit: 5)}) before replying; #{next}"

    Error.new(:sidecar_exited, message, details: status)
  end

  defp unavailable(%{status: :gave_up} = state, op) do
    Error.new(
      :unavailable,
      "sidecar #{state.index} of #{inspect(state.instance)} is down: the connection gave up after #{state.restarts - 1} restarts in a row (max_restarts: #{state.max_restarts}); the last sidecar #{state.last_why}; restart the instance",
      op: op,
      details: %{restarts: state.total_restarts, last_exit: state.last_exit}
    )
  end

  defp unavailable(state, op) do
    next =
      case state.status do
        :backoff -> "the next start is in #{max(state.next_start_at - now_ms(), 0)} ms"
        _ -> "a new sidecar is starting"
      end

    Error.new(
      :unavailable,
      "sidecar #{state.index} of #{inspect(state.instance)} is being restarted (restart #{state.restarts} in a row, #{state.total_restarts} since the instance started; the last sidecar #{state.last_why}); #{next}, after the call's timeout",
      op: op,
      details: %{restarts: state.total_restarts, last_exit: state.last_exit}
    )
  end

  # -- requests -------------------------------------------------------------

  # `left` is what remains of the caller's `timeout` (less after waiting for a slot or a start):
  # the request gets `left`, and a timeout's message names the caller's own `timeout`.
  defp start_request(state, {pid, _} = from, op, args, left, timeout) do
    id = state.next_id
    mref = Process.monitor(pid)
    timer = Process.send_after(self(), {:request_timeout, id}, left)
    state = %{state | next_id: id + 1, pending: Map.put(state.pending, id, {from, mref, timer, op, timeout}), monitors: Map.put(state.monitors, mref, id)}
    send_frame(state, {:req, id, op, args})
  end

  defp complete(state, id, result) do
    case Map.pop(state.pending, id) do
      # cancelled (timed out, caller gone): the late reply is dropped, and its slot in the sidecar is free
      {nil, _} ->
        if MapSet.member?(state.cancelled, id), do: drain_waiting(%{state | cancelled: MapSet.delete(state.cancelled, id)}), else: state

      {{from, mref, timer, op, _timeout}, pending} ->
        Process.cancel_timer(timer)
        Process.demonitor(mref, [:flush])
        GenServer.reply(from, normalize(result, op))
        drain_waiting(%{state | pending: pending, monitors: Map.delete(state.monitors, mref)})
    end
  end

  # Start queued callers while there is room; those whose deadline passed get :timeout.
  defp drain_waiting(%{status: status} = state) when status != :ready, do: state

  defp drain_waiting(state) do
    if running(state) >= state.max_in_flight do
      state
    else
      case :queue.out(state.waiting) do
        {:empty, _} ->
          state

        {{:value, ref}, rest} ->
          case Map.pop(state.waiting_entries, ref) do
            # its caller was answered already (its timeout)
            {nil, _} ->
              drain_waiting(%{state | waiting: rest})

            {{from, op, args, deadline, timer, timeout}, entries} ->
              Process.cancel_timer(timer)
              left = deadline - now_ms()
              state = %{state | waiting: rest, waiting_entries: entries}

              cond do
                # A caller that died while it waited is not served: its request would run for nobody.
                caller_gone?(from) ->
                  drain_waiting(state)

                left <= 0 ->
                  GenServer.reply(from, {:error, waited_too_long(state, op)})
                  drain_waiting(state)

                true ->
                  drain_waiting(start_request(state, from, op, Redact.unseal(args), left, timeout))
              end
          end
      end
    end
  end

  # Requests the sidecar runs for this connection: those with a caller, and those cancelled but not answered yet.
  defp running(state), do: map_size(state.pending) + MapSet.size(state.cancelled)

  defp cancelled_note(%{cancelled: c}) do
    case MapSet.size(c) do
      0 -> ""
      n -> ", #{n} of them cancelled and still finishing"
    end
  end

  defp caller_gone?({pid, _tag}) when is_pid(pid) and node(pid) == node(), do: not Process.alive?(pid)
  defp caller_gone?(_from), do: false

  # Callers whose deadline comes before the next start cannot be served: tell them now.
  defp expire_waiting_before(state, t) do
    {expired, rest} = Enum.split_with(state.waiting_entries, fn {_ref, {_, _, _, deadline, _, _}} -> deadline <= t end)

    for {_ref, {from, op, _, _, timer, _}} <- expired do
      Process.cancel_timer(timer)
      GenServer.reply(from, {:error, unavailable(state, op)})
    end

    compact_waiting(%{state | waiting_entries: Map.new(rest)})
  end

  defp send_frame(state, term) do
    data = :erlang.term_to_binary(term)
    flush_writes(%{state | write_queue: :queue.in(data, state.write_queue)})
  end

  # Never suspend on a busy port: keep the frame and try again in a moment. Frames queued
  # for a sidecar that died are dropped with it (their callers were answered).
  defp flush_writes(%{port: nil} = state), do: %{state | write_queue: :queue.new()}

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

  defp fail_pending(state, error) do
    for {_id, {from, mref, timer, _op, _timeout}} <- state.pending do
      Process.cancel_timer(timer)
      Process.demonitor(mref, [:flush])
      GenServer.reply(from, error)
    end

    :ok
  end

  defp fail_waiting(state, error_for) do
    for {_ref, {from, op, _args, _deadline, timer, _timeout}} <- state.waiting_entries do
      Process.cancel_timer(timer)
      GenServer.reply(from, {:error, error_for.(op)})
    end

    :ok
  end

  defp fail_all(state, {:error, e} = error) do
    fail_pending(state, error)
    fail_waiting(state, fn _ -> e end)
  end

  defp dispatch_event(%{registry: nil}, _name, _payload), do: :ok

  defp dispatch_event(%{registry: registry}, name, payload) do
    Registry.dispatch(registry, :events, fn entries ->
      for {pid, _} <- entries, do: send(pid, {:prompt_engine_event, name, payload})
    end)
  end

  # [:safe]: no atom is created from a frame. An atom PromptEngine.Atoms does not list comes
  # back as a string (PromptEngine.Term), is counted and logged once; the caller is answered.
  defp decode(data, state) do
    {{:ok, :erlang.binary_to_term(data, [:safe])}, state}
  rescue
    ArgumentError ->
      case PromptEngine.Term.decode(data) do
        {:ok, term, names} ->
          new = Enum.reject(names, &MapSet.member?(state.logged_atoms, &1))

          if new != [] and MapSet.size(state.logged_atoms) < @max_logged_atoms,
            do:
              Logger.warning(
                "prompt-engine: the sidecar sent atoms this client does not know (#{Enum.join(new, ", ")}); they are passed on as strings. Regenerate PromptEngine.Atoms (npm run docs:ops)"
              )

          # The names logged once are kept up to the cap: past it nothing is logged, so nothing more is kept.
          logged = if MapSet.size(state.logged_atoms) < @max_logged_atoms, do: Enum.into(new, state.logged_atoms), else: state.logged_atoms
          {{:ok, term}, %{state | unknown_atoms: state.unknown_atoms + length(names), logged_atoms: logged}}

        :error ->
          {{:error, :undecodable}, state}
      end
  end

  defp normalize({:ok, :ok}, _op), do: :ok
  defp normalize({:ok, _} = ok, _op), do: ok
  defp normalize({:error, {reason, message}}, op) when is_atom(reason) and is_binary(message), do: {:error, Error.new(reason, message, op: op)}

  defp normalize(other, op),
    do: {:error, Error.new(:bad_reply, "the sidecar sent a reply of an unknown shape: #{inspect(other, limit: 10)}", op: op, details: other)}

  # A caller waits (for the handshake, a restart or a free slot) within its timeout; at most
  # max_in_flight callers wait, past that `:overloaded` at once. Its arguments are sealed while
  # they wait: they may hold a secret (an LLM key given per call), and the state is printable.
  defp enqueue(state, from, op, args, timeout, given) do
    if map_size(state.waiting_entries) >= state.max_in_flight do
      {:reply,
       {:error,
        Error.new(:overloaded, "#{state.max_in_flight} calls already wait for this sidecar (at most max_in_flight wait, #{state.status}); try again later",
          op: op
        )}, state}
    else
      ref = make_ref()
      timer = Process.send_after(self(), {:waiting_timeout, ref}, timeout)
      entries = Map.put(state.waiting_entries, ref, {from, op, Redact.seal(args), now_ms() + timeout, timer, given})
      {:noreply, compact_waiting(%{state | waiting: :queue.in(ref, state.waiting), waiting_entries: entries})}
    end
  end

  # Refs whose callers left are dropped from the queue once they outnumber the callers waiting
  # (callers timing out while the sidecar starts would otherwise grow the queue without end).
  defp compact_waiting(state) do
    if :queue.len(state.waiting) > 2 * map_size(state.waiting_entries) + 64,
      do: %{state | waiting: :queue.filter(&Map.has_key?(state.waiting_entries, &1), state.waiting)},
      else: state
  end

  defp waited_too_long(%{status: :starting, total_restarts: 0, ever_ready: false}, op),
    do: Error.new(:timeout, "the sidecar was still starting when the call's timeout passed (see ready_timeout)", op: op)

  defp waited_too_long(%{status: :ready}, op),
    do: Error.new(:timeout, "no free slot on the sidecar (max_in_flight) before the call's timeout", op: op)

  defp waited_too_long(state, op), do: unavailable(state, op)

  defp now_ms, do: System.monotonic_time(:millisecond)
end
