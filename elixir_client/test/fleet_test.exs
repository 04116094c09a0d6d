defmodule PromptEngine.FleetTest do
  # One experiment, a pool of three sidecars on one PostgreSQL, driven from Elixir with the real data:
  # sports_understanding on airoboros-13b, proposals from the stand-in paraphrasing LLM, each outcome
  # drawn from the served paraphrase's measured accuracy (which no sidecar sees). The counts summed over
  # the variants are exactly the outcomes sent (one sent twice, once to another sidecar, counts once),
  # every sidecar of the pool gives the same variants, states and leader, the proposal requests stay
  # those of one sidecar alone (run first, with an LLM of its own), and the variant cap holds.
  use ExUnit.Case, async: false

  alias PromptEngine.{Connection, TestHelper}

  @rounds 3_000
  @model "airoboros-13b"
  # the variant cap per generation, low enough that a run reaches it
  @cap 12

  setup do
    {:ok, world: start_world()}
  end

  # The stand-in LLM and the group's accuracies, in a node process of their own (its proposal requests counted).
  defp start_world do
    world =
      Port.open({:spawn_executable, System.find_executable("node")}, [
        :binary,
        {:line, 1_000_000},
        args: [Path.expand("support/loop_world.mjs", __DIR__), "sports_understanding", @model]
      ])

    on_exit(fn -> if Port.info(world), do: Port.close(world) end)
    read_world(world, %{acc: %{}})
  end

  defp read_world(port, acc) do
    receive do
      {^port, {:data, {:eol, "ready"}}} ->
        Map.put(acc, :port, port)

      {^port, {:data, {:eol, "url " <> url}}} ->
        read_world(port, Map.put(acc, :url, url))

      {^port, {:data, {:eol, "base " <> b}}} ->
        read_world(port, Map.put(acc, :base, Base.decode64!(b)))

      {^port, {:data, {:eol, "median " <> m}}} ->
        read_world(port, Map.put(acc, :median, String.to_float(m)))

      {^port, {:data, {:eol, "acc " <> rest}}} ->
        [b, a] = String.split(rest, " ")
        read_world(port, %{acc | acc: Map.put(acc.acc, Base.decode64!(b), to_number(a))})
    after
      60_000 -> flunk("the loop world did not start")
    end
  end

  # The proposal requests its LLM has answered so far.
  defp requests(world) do
    port = world.port
    send(port, {self(), {:command, "requests\n"}})
    assert_receive {^port, {:data, {:eol, "requests " <> n}}}, 5_000
    String.to_integer(n)
  end

  # An instance of `pool_size` sidecars on the test PostgreSQL, proposals from `world`'s LLM.
  defp start_instance(name, pool_size, world) do
    start_supervised!(
      {PromptEngine,
       name: name,
       pool_size: pool_size,
       timeout: 30_000,
       data_dir: TestHelper.tmp_dir("pe-fleet"),
       database_url: TestHelper.pg_url!(),
       env: [
         {"LOG_LEVEL", "warn"},
         {"LLM_URL", world.url},
         {"LLM_MODEL", "fake"},
         {"PROMPT_ENGINE_RETRAIN_EVERY", "0"},
         {"PROMPT_ENGINE_LOOP_MAX_VARIANTS", Integer.to_string(@cap)}
       ]}
    )
  end

  # `@rounds` rounds of choose, an outcome drawn from the served text's accuracy, report; `each.(i, choice)` after round i.
  defp drive(name, experiment, world, each) do
    for i <- 1..@rounds do
      {:ok, c} = PromptEngine.choose_prompt(experiment, world.base, %{model: @model}, name: name)
      :ok = PromptEngine.report_outcome(c, :rand.uniform() < accuracy(world, c.prompt), name: name)
      each.(i, c)
    end
  end

  defp to_number(s), do: if(String.contains?(s, "."), do: String.to_float(s), else: String.to_integer(s) * 1.0)

  # What a served text earns: its own measured accuracy (as the proposer returned it, trimmed), else the pool's median.
  defp accuracy(world, text), do: Map.get(world.acc, text) || Map.get(world.acc, String.trim(text)) || world.median

  test "pool_size: 3 on one PostgreSQL: exact counts, one state on every sidecar, one stream of proposals, the cap", %{world: world} do
    :rand.seed(:exsss, {1, 2, 3})
    # One sidecar alone first, its own LLM: the proposal requests a pool may make.
    solo_world = start_world()
    solo = TestHelper.unique_name(__MODULE__)
    start_instance(solo, 1, solo_world)
    drive(solo, "solo_#{System.unique_integer([:positive])}", solo_world, fn _, _ -> :ok end)
    :ok = stop_supervised({PromptEngine, solo})
    solo_requests = requests(solo_world)

    name = TestHelper.unique_name(__MODULE__)
    experiment = "fleet_#{System.unique_integer([:positive])}"
    start_instance(name, 3, world)
    conns = PromptEngine.Supervisor.connections(name)

    drive(name, experiment, world, fn
      100, c ->
        # the same entry sent twice, the second time to another sidecar than the pool routes the experiment to: stored and counted once
        <<a::binary-8, b::binary-4, c4::binary-4, d::binary-4, e::binary-12>> = Base.encode16(:crypto.strong_rand_bytes(16), case: :lower)
        id = Enum.join([a, b, c4, d, e], "-")
        entry = %{id: id, prompt_id: c.prompt_id, success: true, execution_time_ms: 1, metadata: c.metadata}
        {:ok, _} = PromptEngine.track_execution(entry, name: name)
        other = Enum.find(conns, &(&1 != PromptEngine.Supervisor.pick(name, experiment)))
        {:ok, _} = Connection.request(other, :track_execution, entry, timeout: 30_000)

      _, _ ->
        :ok
    end)

    sent = @rounds + 1

    # every sidecar of the pool, asked itself, within the staleness bound: the same state, the counts exact
    views =
      TestHelper.until(
        fn ->
          vs = for conn <- conns, do: view(conn, experiment)
          if Enum.all?(vs, &(&1 == hd(vs))) and hd(vs).counted == sent, do: vs
        end,
        15_000,
        100
      ) || for(conn <- conns, do: view(conn, experiment))

    assert Enum.all?(views, &(&1 == hd(views))), inspect(views, limit: :infinity)
    assert hd(views).counted == sent
    # the cap per generation, reached and held
    assert length(hd(views).variants) == @cap

    # one stream of proposals, however many sidecars serve
    fleet_requests = requests(world)
    assert fleet_requests >= 1
    assert fleet_requests <= max(floor(1.2 * solo_requests), solo_requests + 1), "one sidecar #{solo_requests}, the pool #{fleet_requests}"
  end

  defp view(conn, experiment) do
    {:ok, %{experiments: [e]}} = Connection.request(conn, :experiment, %{experiment: experiment, model: @model}, timeout: 30_000)
    variants = e.variants |> Enum.map(&{&1.prompt_id, &1.state, &1.count}) |> Enum.sort()
    %{leader: e.leader.prompt_id, generation: e.generation, variants: variants, counted: Enum.sum(for {_, _, n} <- variants, do: n)}
  end
end
