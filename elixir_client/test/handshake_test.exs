defmodule PromptEngine.HandshakeTest do
  use ExUnit.Case, async: false

  alias PromptEngine.Error

  @launcher Path.expand("../../port/prompt_engine", __DIR__)

  # A sidecar that takes `secs` to start: the handshake must not block the supervisor,
  # and calls made meanwhile wait for it (within their own timeout).
  defp slow_executable(secs) do
    path = Path.join(System.tmp_dir!(), "pe-slow-#{System.unique_integer([:positive])}.sh")
    File.write!(path, "#!/bin/sh\nsleep #{secs}\nexec '#{@launcher}' \"$@\"\n")
    File.chmod!(path, 0o755)
    on_exit(fn -> File.rm(path) end)
    path
  end

  defp start(exe, extra \\ []) do
    name = Module.concat(__MODULE__, "I#{System.unique_integer([:positive])}")
    dir = Path.join(System.tmp_dir!(), "pe-ex-hs-#{System.unique_integer([:positive])}")
    on_exit(fn -> File.rm_rf(dir) end)
    t0 = System.monotonic_time(:millisecond)

    start_supervised!(
      {PromptEngine, [name: name, executable: exe, data_dir: dir, database_url: PromptEngine.TestHelper.pg_url!(), env: [{"LOG_LEVEL", "warn"}]] ++ extra}
    )

    {name, System.monotonic_time(:millisecond) - t0}
  end

  test "sync_start: false: a slow sidecar start does not block the supervisor; early calls are queued, not failed" do
    {name, start_ms} = start(slow_executable(1.5), sync_start: false)
    assert start_ms < 1_000, "starting the instance took #{start_ms} ms: the handshake blocked init/1"

    [conn] = PromptEngine.Supervisor.connections(name)
    assert %{status: :starting} = PromptEngine.Connection.info(conn)

    t0 = System.monotonic_time(:millisecond)
    early = for i <- 1..5, do: Task.async(fn -> PromptEngine.echo(%{i: i}, name: name, timeout: 10_000) end)
    assert {:error, %Error{reason: :timeout, message: msg}} = PromptEngine.health(name: name, timeout: 200)
    assert msg =~ "still starting"

    results = Task.await_many(early, 15_000)
    assert Enum.sort(results) == for(i <- 1..5, do: {:ok, %{i: i}})
    assert System.monotonic_time(:millisecond) - t0 >= 1_000
    assert %{status: :ready} = PromptEngine.Connection.info(conn)
  end

  test "while the sidecar starts, at most max_in_flight callers wait: the next is :overloaded at once, and those that time out leave nothing behind" do
    {name, _} = start(slow_executable(2), sync_start: false, max_in_flight: 4)
    [conn] = PromptEngine.Supervisor.connections(name)
    # two that wait until the sidecar is up, two that give up first
    lasting = for i <- 1..2, do: Task.async(fn -> PromptEngine.echo(%{i: i}, name: name, timeout: 20_000) end)
    short = for i <- 3..4, do: Task.async(fn -> PromptEngine.echo(%{i: i}, name: name, timeout: 300) end)
    assert PromptEngine.TestHelper.until(fn -> PromptEngine.Connection.info(conn).waiting == 4 end, 5_000)
    assert {:error, %Error{reason: :overloaded, message: msg}} = PromptEngine.echo(%{i: 5}, name: name, timeout: 20_000)
    assert msg =~ "4 calls already wait"

    for r <- Task.await_many(short, 5_000), do: assert({:error, %Error{reason: :timeout}} = r)
    # their room is free again: a fifth caller waits
    assert PromptEngine.Connection.info(conn).waiting == 2
    fifth = Task.async(fn -> PromptEngine.echo(%{i: 5}, name: name, timeout: 20_000) end)
    assert Enum.sort(Task.await_many([fifth | lasting], 25_000)) == for(i <- [1, 2, 5], do: {:ok, %{i: i}})
    state = :sys.get_state(conn)
    assert state.waiting_entries == %{} and :queue.is_empty(state.waiting)
  end

  test "a sidecar that never completes its handshake fails the waiting callers with a reason" do
    {name, _} = start(slow_executable(3), ready_timeout: 300, max_restarts: 0, sync_start: false)
    assert {:error, %Error{reason: :unavailable, message: msg}} = PromptEngine.health(name: name, timeout: 5_000)
    assert msg =~ "ready handshake" and msg =~ "gave up"
  end

  test "sync_start (the default): the start returns when the sidecar is ready, or fails with its error" do
    {name, start_ms} = start(slow_executable(1))
    assert start_ms >= 1_000
    [conn] = PromptEngine.Supervisor.connections(name)
    assert %{status: :ready} = PromptEngine.Connection.info(conn)

    # a failed start_link also exits the process that started it (it is linked), as OTP does
    Process.flag(:trap_exit, true)

    assert {:error, %Error{reason: :unavailable, message: msg}} =
             PromptEngine.start_link(
               name: Module.concat(__MODULE__, Never),
               executable: slow_executable(3),
               ready_timeout: 300,
               database_url: PromptEngine.TestHelper.pg_url!(),
               env: [{"LOG_LEVEL", "warn"}]
             )

    assert msg =~ "ready handshake within 300 ms"
    # nothing is left running, and calls say why
    assert {:error, %Error{reason: :no_instance, message: msg}} = PromptEngine.health(name: Module.concat(__MODULE__, Never))
    assert msg =~ "failed to start"
  end

  test "an app's supervisor gets the start error as {:error, {:shutdown, {:failed_to_start_child, ...}}}" do
    missing = Path.join(System.tmp_dir!(), "pe-missing-#{System.unique_integer([:positive])}.js")
    Process.flag(:trap_exit, true)

    assert {:error, {:shutdown, {:failed_to_start_child, {PromptEngine, PromptEngine}, %Error{reason: :executable_not_found, message: msg}}}} =
             Supervisor.start_link([{PromptEngine, executable: missing}], strategy: :one_for_one)

    assert msg =~ missing
  end
end
