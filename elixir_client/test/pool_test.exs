defmodule PromptEngine.PoolTest do
  # Pools: a choice and its outcome meet on one sidecar (affinity by experiment name, on
  # PostgreSQL); a pool on the embedded PGlite is refused at start with the fix.
  use ExUnit.Case, async: false

  alias PromptEngine.{Connection, Error, TestHelper}

  test "pool_size: 3 on PostgreSQL: choose_prompt, report_outcome and experiment of one experiment reach one sidecar" do
    name = TestHelper.unique_name(__MODULE__)

    start_supervised!(
      {PromptEngine, name: name, pool_size: 3, data_dir: TestHelper.tmp_dir("pe-pool"), database_url: TestHelper.pg_url!(), env: [{"LOG_LEVEL", "warn"}]}
    )

    conns = PromptEngine.Supervisor.connections(name)
    assert length(Enum.uniq(for c <- conns, do: Connection.info(c).os_pid)) == 3

    # Six names or more, until every sidecar is routed some (by pick/2, the client's routing): six names
    # drawn at random all reach one sidecar once in 243 runs.
    exps = spread_names(name, length(conns), [])
    rounds = 30

    for exp <- exps, _ <- 1..rounds do
      {:ok, choice} = PromptEngine.choose_prompt(exp, "Classify the ticket {ticket}.", %{model: "m"}, name: name)
      :ok = PromptEngine.report_outcome(choice, true, name: name)
    end

    # each sidecar's own counters: which served choices, which stored outcomes
    per_sidecar =
      for c <- conns do
        {:ok, %{ops: ops, services: services}} = Connection.request(c, :stats, %{})
        # ops are keyed by name (binaries): %{"choose_prompt" => %{calls: n, ...}}
        calls = fn op -> get_in(ops, [op, :calls]) || 0 end
        {calls.("choose_prompt"), calls.("track_execution"), services}
      end

    # every experiment's outcomes were counted by the sidecar that chose for it: none unmatched
    for exp <- exps do
      assert {:ok, %{experiments: [e]}} = PromptEngine.experiment(exp, name: name)
      assert e.outcomes == rounds, "#{exp}: #{e.outcomes} of #{rounds} outcomes counted where it was chosen"
    end

    # and the sidecar that served an experiment's choices stored its outcomes
    for {chosen, tracked, _} <- per_sidecar, do: assert(chosen == tracked, inspect(per_sidecar))
    assert Enum.sum(for {c, _, _} <- per_sidecar, do: c) == length(exps) * rounds
    # each sidecar served exactly the choices of the experiments routed to it, and every one served some
    for {c, {chosen, _, _}} <- Enum.zip(conns, per_sidecar) do
      assert chosen == rounds * Enum.count(exps, &(PromptEngine.Supervisor.pick(name, &1) == c))
      assert chosen > 0
    end

    # a track_execution naming the experiment in its metadata goes the same way, whatever the
    # keys (atoms or strings, a map or a keyword list); so does a late rating whose context is the choice's metadata
    [exp | _] = exps
    target = PromptEngine.Supervisor.pick(name, exp)
    {:ok, choice} = PromptEngine.choose_prompt(exp, "Classify the ticket {ticket}.", %{model: "m"}, name: name)

    calls = fn op ->
      Enum.map(conns, fn c ->
        {:ok, %{ops: ops}} = Connection.request(c, :stats, %{})
        get_in(ops, [op, :calls]) || 0
      end)
    end

    executions = calls.("track_execution")

    for metadata <- [%{"experiment" => exp}, %{experiment: exp}] do
      {:ok, _} = PromptEngine.track_execution(%{prompt_id: "p", execution_time_ms: 1, success: true, metadata: metadata}, name: name)
    end

    {:ok, _} = PromptEngine.track_execution([prompt_id: "p", execution_time_ms: 1, success: true, metadata: %{experiment: exp}], name: name)
    {:ok, _} = PromptEngine.track_execution([prompt_id: "p", execution_time_ms: 1, success: true, metadata: [experiment: exp]], name: name)

    {:ok, _} =
      PromptEngine.track_execution(%{"prompt_id" => "p", "execution_time_ms" => 1, "success" => true, "metadata" => %{"experiment" => exp}}, name: name)

    assert calls.("track_execution") == Enum.map(conns, fn c -> if c == target, do: 5, else: 0 end) |> Enum.zip_with(executions, &+/2)

    ratings = calls.("track_feedback")
    {:ok, _} = PromptEngine.track_feedback(%{prompt_id: choice.prompt_id, feedback_type: :quality, rating: 1, context: choice.metadata}, name: name)
    {:ok, _} = PromptEngine.track_feedback([prompt_id: choice.prompt_id, feedback_type: :quality, rating: 1, context: %{experiment: exp}], name: name)
    {:ok, _} = PromptEngine.track_feedback([prompt_id: choice.prompt_id, feedback_type: :quality, rating: 1, context: [experiment: exp]], name: name)
    assert calls.("track_feedback") == Enum.map(conns, fn c -> if c == target, do: 3, else: 0 end) |> Enum.zip_with(ratings, &+/2)

    # and a choice asked with string keys through the generic call
    choices = calls.("choose_prompt")
    {:ok, _} = PromptEngine.call(:choose_prompt, %{"experiment" => exp, "prompt" => "Classify the ticket {ticket}.", "model" => "m"}, name: name)
    assert calls.("choose_prompt") == Enum.map(conns, fn c -> if c == target, do: 1, else: 0 end) |> Enum.zip_with(choices, &+/2)
  end

  test "a pool on the embedded PGlite is refused at start, naming the fix" do
    for opts <- [[database_url: ""], [env: [{"DATABASE_URL", ""}]], [database_url: TestHelper.pg_url!(), env: [{"DATABASE_URL", nil}]]] do
      previous = System.get_env("DATABASE_URL")
      System.delete_env("DATABASE_URL")

      try do
        assert {:error, %Error{reason: :bad_option, message: msg}} = PromptEngine.start_link([name: TestHelper.unique_name(__MODULE__), pool_size: 2] ++ opts)
        assert msg =~ "pool_size: 2" and msg =~ "PGlite" and msg =~ "database_url:" and msg =~ "pool_size: 1"
      after
        if previous, do: System.put_env("DATABASE_URL", previous)
      end
    end
  end

  test "dashboard: the pool's first sidecar serves the page, with the token; the second does not" do
    {:ok, _} = Application.ensure_all_started(:inets)
    {:ok, socket} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
    {:ok, port} = :inet.port(socket)
    :gen_tcp.close(socket)
    name = TestHelper.unique_name(__MODULE__)
    token = "pool-test-token-#{System.unique_integer([:positive])}"

    start_supervised!(
      {PromptEngine,
       name: name,
       pool_size: 2,
       data_dir: TestHelper.tmp_dir("pe-dash"),
       database_url: TestHelper.pg_url!(),
       dashboard: [port: port, token: token],
       env: [{"LOG_LEVEL", "warn"}]}
    )

    url = ~c"http://127.0.0.1:#{port}/health.json"
    assert {:ok, {{_, 200, _}, _headers, body}} = :httpc.request(:get, {url, []}, [timeout: 30_000], body_format: :binary)
    assert body =~ "status"
    refute body =~ token

    # the page is served by sidecar 1 alone: health.json is its own health
    [c1, _c2] = PromptEngine.Supervisor.connections(name)
    assert {:ok, %{"health" => %{"os_pid" => os_pid}}} = PromptEngine.LogRelay.decode_json(body)
    assert os_pid == Connection.info(c1).os_pid
  end

  defp spread_names(name, sidecars, names) do
    routed = names |> Enum.map(&PromptEngine.Supervisor.pick(name, &1)) |> Enum.uniq() |> length()
    if length(names) >= 6 and routed == sidecars, do: names, else: spread_names(name, sidecars, ["pool_exp_#{System.unique_integer([:positive])}" | names])
  end
end
