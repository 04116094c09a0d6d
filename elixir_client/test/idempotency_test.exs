defmodule PromptEngine.IdempotencyTest do
  # Idempotent retries by default: every tracking entry carries an id the client made, so a
  # retry after :sidecar_exited or :timeout stores it once. Counted in the real PostgreSQL.
  use ExUnit.Case, async: false

  alias PromptEngine.{Connection, Error, TestHelper}

  setup do
    name = TestHelper.unique_name(__MODULE__)
    # The restart waits 1 s, longer than the load's 500 ms calls: on a fast machine a sidecar is back within
    # 500 ms, and calls made around the kill would all be answered by the new one without failing once.
    start_supervised!(
      {PromptEngine,
       name: name, data_dir: TestHelper.tmp_dir("pe-idem"), database_url: TestHelper.pg_url!(), backoff_initial: 1_000, env: [{"LOG_LEVEL", "warn"}]}
    )

    {:ok, name: name}
  end

  defp rows(name, prompt_id) do
    {:ok, %{prompts: prompts}} = PromptEngine.call(:prompt_stats, %{prompt_id: prompt_id}, name: name, timeout: 30_000)

    case prompts do
      [%{count: n}] -> n
      [] -> 0
    end
  end

  test "kill -9 mid-load; every failed call retried with the same arguments; rows = calls", %{name: name} do
    prompt_id = "idem-#{System.unique_integer([:positive])}"
    outcome_exp = "idem_exp_#{System.unique_integer([:positive])}"
    [conn] = PromptEngine.Supervisor.connections(name)
    %{os_pid: os_pid} = Connection.info(conn)
    {:ok, choice} = PromptEngine.choose_prompt(outcome_exp, "Classify the ticket.", %{model: "m"}, name: name)
    parent = self()

    # A load that goes on until it is told to stop: each worker always has a call in flight, so the kill
    # lands mid-load whatever the machine's speed (a fixed set of calls could all be answered in the batch
    # that answered the first). Short timeouts (shorter than a sidecar's restart) so that calls fail
    # (:sidecar_exited, :timeout, :unavailable) and are retried by the caller, as an app would.
    workers =
      for w <- 1..24 do
        Task.async(fn -> load(w, 0, %{executions: 0, outcomes: 0, retried: 0}, parent, prompt_id, choice, name) end)
      end

    answers(40)
    {_, 0} = System.cmd("kill", ["-9", Integer.to_string(os_pid)])
    # Served again by the restarted sidecar, then stop.
    assert TestHelper.until(fn -> Connection.info(conn).total_restarts == 1 end, 30_000, 50), "the sidecar did not come back"
    flush_answers()
    answers(40)
    for w <- workers, do: send(w.pid, :stop)
    done = Task.await_many(workers, 180_000)
    retries = done |> Enum.map(& &1.retried) |> Enum.sum()
    IO.puts(:stderr, "idempotency: #{retries} calls failed at least once and were retried")
    assert retries > 0, "no call failed: the kill did not happen mid-load"
    assert %{total_restarts: 1} = Connection.info(conn)

    assert rows(name, prompt_id) == done |> Enum.map(& &1.executions) |> Enum.sum()
    assert rows(name, choice.prompt_id) == done |> Enum.map(& &1.outcomes) |> Enum.sum()
  end

  # One worker's calls, one at a time, each retried until it is answered, until :stop; every third an outcome.
  defp load(w, k, made, parent, prompt_id, choice, name) do
    receive do
      :stop -> made
    after
      0 ->
        i = w * 100_000 + k

        {call, kind} =
          if rem(k, 3) == 0,
            do: {fn -> PromptEngine.report_outcome(choice, rem(i, 2) == 0, name: name, timeout: 500, execution_time_ms: rem(i, 1000)) end, :outcomes},
            else:
              {fn -> PromptEngine.track_execution(%{prompt_id: prompt_id, execution_time_ms: rem(i, 1000), success: true}, name: name, timeout: 500) end,
               :executions}

        failed = retry(call, parent, 0)
        load(w, k + 1, %{made | kind => made[kind] + 1, retried: made.retried + failed}, parent, prompt_id, choice, name)
    end
  end

  defp flush_answers do
    receive do
      {:answered, _} -> flush_answers()
    after
      0 -> :ok
    end
  end

  defp answers(0), do: :ok

  defp answers(n) do
    assert_receive {:answered, _}, 30_000
    answers(n - 1)
  end

  test "a call that timed out, retried with the same arguments, is stored once", %{name: name} do
    prompt_id = "idem-timeout-#{System.unique_integer([:positive])}"
    entry = %{prompt_id: prompt_id, execution_time_ms: 7, success: true}
    # timeout 0: the request may or may not reach the store before it is cancelled
    assert {:error, %Error{reason: :timeout}} = PromptEngine.track_execution(entry, name: name, timeout: 0)
    assert {:ok, %{id: id}} = PromptEngine.track_execution(entry, name: name)
    assert {:ok, %{id: ^id}} = PromptEngine.track_execution(Map.put(entry, :id, id), name: name)
    assert rows(name, prompt_id) == 1

    # after a success the same arguments are a new entry, with a new id
    assert {:ok, %{id: id2}} = PromptEngine.track_execution(entry, name: name)
    assert id2 != id
    assert rows(name, prompt_id) == 2

    # an id the app gives is used as it is
    mine = PromptEngine.Args.uuid4()
    assert {:ok, %{id: ^mine}} = PromptEngine.track_feedback(%{id: mine, prompt_id: prompt_id, feedback_type: :quality, rating: 5}, name: name)
  end

  defp retry(call, parent, failures) do
    case call.() do
      ok when ok == :ok or elem(ok, 0) == :ok ->
        send(parent, {:answered, failures})
        min(failures, 1)

      {:error, %Error{reason: reason}} when reason in [:sidecar_exited, :timeout, :unavailable] ->
        retry(call, parent, failures + 1)
    end
  end
end
