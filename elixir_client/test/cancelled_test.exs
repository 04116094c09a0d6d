defmodule PromptEngine.CancelledTest do
  # A call whose caller gave up (its timeout) is cancelled in the sidecar, but an op that does not
  # stop at a cancel (a write waiting on the database) runs on there and holds one of the sidecar's
  # slots (PROMPT_ENGINE_PORT_MAX_IN_FLIGHT). The client counts it until its reply comes back, so a
  # `queue: true` caller waits for a slot instead of being refused `:overloaded` by the sidecar.
  use ExUnit.Case, async: false

  alias PromptEngine.{Error, TestHelper}

  test "a cancelled write still running in the sidecar keeps its slot: a queued call waits for it, then runs" do
    name = TestHelper.unique_name(__MODULE__)
    schema = "pe_cancelled_#{System.unique_integer([:positive])}"
    url = TestHelper.pg_url!()

    start_supervised!(
      {PromptEngine,
       name: name,
       data_dir: TestHelper.tmp_dir("pe-cancelled"),
       database_url: url,
       max_in_flight: 2,
       env: [{"LOG_LEVEL", "warn"}, {"PROMPT_ENGINE_DB_SCHEMA", schema}, {"PROMPT_ENGINE_PORT_MAX_IN_FLIGHT", "2"}]}
    )

    # the store's tables exist
    assert {:ok, _} = PromptEngine.track_execution(%{prompt_id: "p0", execution_time_ms: 1, success: true}, name: name)

    # Another session holds the executions table for a few seconds: inserts wait for it.
    psql = Path.join(System.fetch_env!("TEST_PG_BIN"), "psql")
    hold = "BEGIN; LOCK TABLE #{schema}.prompt_executions IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(4); COMMIT;"
    locker = Task.async(fn -> System.cmd(psql, [url, "-qc", hold], stderr_to_stdout: true) end)

    held? = fn ->
      {out, _} =
        System.cmd(psql, [
          url,
          "-tAc",
          "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace " <>
            "WHERE n.nspname = '#{schema}' AND c.relname = 'prompt_executions' AND l.mode = 'AccessExclusiveLock' AND l.granted"
        ])

      String.trim(out) == "1"
    end

    assert TestHelper.until(held?, 10_000, 20)

    writes =
      for i <- 1..2,
          do: Task.async(fn -> PromptEngine.track_execution(%{prompt_id: "p#{i}", execution_time_ms: 1, success: true}, name: name, timeout: 300) end)

    for r <- Task.await_many(writes, 5_000), do: assert({:error, %Error{reason: :timeout}} = r)

    # Both writes still wait on the lock in the sidecar, its two slots taken: a queued call waits for one.
    [conn] = PromptEngine.Supervisor.connections(name)
    assert {:error, %Error{reason: :overloaded, message: msg}} = PromptEngine.echo(%{n: 0}, name: name)
    assert msg =~ "2 of them cancelled and still finishing"
    assert {:ok, %{n: 1}} = PromptEngine.echo(%{n: 1}, name: name, queue: true, timeout: 20_000)
    assert {{_, 0}, _} = {Task.await(locker, 20_000), :locker}
    # The lock released, both writes end in the sidecar and their replies free the client's count (they may
    # reach the connection a moment after psql has exited: waited for, not assumed).
    assert TestHelper.until(fn -> MapSet.size(:sys.get_state(conn).cancelled) == 0 end, 10_000, 20)
  end
end
