defmodule PromptEngine.ClientTest do
  use ExUnit.Case, async: false

  alias PromptEngine.Error

  # The "never surprises" contract: one error shape, bang variants, keyword-or-map
  # arguments, times encoded for the sidecar, bad shapes as values, start options checked.
  setup do
    dir = Path.join(System.tmp_dir!(), "pe-ex-client-#{System.unique_integer([:positive])}")
    name = Module.concat(__MODULE__, "I#{System.unique_integer([:positive])}")
    # TZ: the sidecar's local zone is not UTC, so a time sent without a zone would be shifted
    start_supervised!(
      {PromptEngine, %{name: name, data_dir: dir, database_url: PromptEngine.TestHelper.pg_url!(), env: %{"LOG_LEVEL" => "warn", "TZ" => "America/New_York"}}}
    )

    on_exit(fn -> File.rm_rf(dir) end)
    {:ok, name: name}
  end

  describe "errors are %PromptEngine.Error{}" do
    test "op errors, with Exception.message/1", %{name: name} do
      assert {:error, %Error{reason: :bad_request, message: "breadth: expected an integer in 1..50", op: :optimize_prompt} = e} =
               PromptEngine.optimize_prompt("x", name: name, breadth: 0)

      assert Exception.message(e) == "breadth: expected an integer in 1..50"
      assert {:error, %Error{reason: :unknown_op}} = PromptEngine.call(:no_such_op, %{}, name: name)
    end

    test "bang variants return the value or raise the error", %{name: name} do
      assert %{status: "ok"} = PromptEngine.health!(name: name)
      assert %{n: 1} = PromptEngine.echo!([n: 1], name: name)
      assert :ok = PromptEngine.cache_put!("k", 1, name: name)
      assert %{found: true, value: 1} = PromptEngine.cache_get!("k", name: name)
      assert :ok = PromptEngine.cache_clear!(name: name)
      assert %{total_entries: 0} = PromptEngine.cache_stats!(name: name)
      assert %{status: "ok"} = PromptEngine.call!(:health, %{}, name: name)

      e = assert_raise Error, fn -> PromptEngine.optimize_prompt!("x", name: name, breadth: 0) end
      assert e.reason == :bad_request and e.message =~ "breadth"
      assert_raise Error, ~r/no instance named/, fn -> PromptEngine.stats!(name: NoSuchInstance) end
      # a wrong shape raises the Error too, never a FunctionClauseError
      assert_raise Error, fn -> PromptEngine.choose_prompt!("exp", "base", "not a context", name: name) end
      assert_raise Error, fn -> PromptEngine.report_outcome!(%{}, :yes) end
    end

    test "every public op has a bang variant" do
      exports = PromptEngine.__info__(:functions)

      for {fun, arity} <- exports,
          not String.ends_with?(Atom.to_string(fun), "!"),
          fun not in [:child_spec, :start_link, :default_executable, :__info__] do
        assert {String.to_atom("#{fun}!"), arity} in exports, "#{fun}/#{arity} has no bang variant"
      end
    end

    test "a timeout is an Error with the op and the time", %{name: name} do
      {:ok, _} = PromptEngine.health(name: name)
      assert {:error, %Error{reason: :timeout, op: :echo, message: msg}} = PromptEngine.echo(%{delay_ms: 2_000}, name: name, timeout: 100)
      assert msg =~ "100 ms"
    end
  end

  describe "no instance" do
    test "a name never started fails at once, not after the timeout" do
      t0 = System.monotonic_time(:millisecond)

      assert {:error, %Error{reason: :no_instance, message: "no instance named PromptEngine.ClientTest.Nope" <> _}} =
               PromptEngine.health(name: PromptEngine.ClientTest.Nope, timeout: 5_000)

      assert System.monotonic_time(:millisecond) - t0 < 100
      assert {:error, %Error{reason: :no_instance}} = PromptEngine.cache_stats(name: PromptEngine.ClientTest.Nope)
      assert {:error, %Error{reason: :no_instance}} = PromptEngine.subscribe(name: PromptEngine.ClientTest.Nope)
    end

    test "Connection.info/1 of a connection that has ended says :down instead of exiting the caller", %{name: name} do
      [registered] = PromptEngine.Supervisor.connections(name)
      assert %{status: :ready} = live = PromptEngine.Connection.info(registered)
      conn = GenServer.whereis(registered)
      ref = Process.monitor(conn)
      Process.exit(conn, :kill)
      assert_receive {:DOWN, ^ref, :process, ^conn, :killed}
      assert %{status: :down, os_pid: nil, in_flight: 0} = down = PromptEngine.Connection.info(conn)
      # Every key of the connection's own, nil: only the sidecar's handshake (what a down connection cannot know) is missing.
      assert Map.keys(down) -- Map.keys(live) == []
      assert Enum.sort(Map.keys(live) -- Map.keys(down)) == [:max_frame_bytes, :ops, :protocol, :version]
      assert %{status: :down} = PromptEngine.Connection.info(:no_such_connection)
    end
  end

  describe "keyword lists or maps" do
    test "options and arguments in either form", %{name: name} do
      assert {:ok, %{n: 1}} = PromptEngine.echo(%{n: 1}, %{name: name, timeout: 2_000})
      assert {:ok, %{n: 1, nested: %{a: 1}}} = PromptEngine.echo([n: 1, nested: [a: 1]], name: name)
      assert {:ok, %{status: "ok"}} = PromptEngine.health(%{name: name})
      assert :ok = PromptEngine.subscribe(name: name)
      assert :ok = PromptEngine.unsubscribe(%{name: name})

      opts = %{name: name, timeout: 30_000}
      assert {:ok, %{id: id}} = PromptEngine.track_execution([prompt_id: "kw-p", execution_time_ms: 5, success: true], opts)
      assert {:ok, %{rows: [%{id: ^id}]}} = PromptEngine.query(:by_id, [id: id], opts)
      assert {:ok, choice} = PromptEngine.choose_prompt("kw_exp", "Answer {q}.", [model: "m"], name: name)
      assert :ok = PromptEngine.report_outcome(choice, true, %{name: name, metadata: [judge: "test"]})
    end

    test "DateTime and NaiveDateTime are sent as ISO 8601 (naive = UTC), nested ones too", %{name: name} do
      opts = [name: name, timeout: 30_000]

      assert {:ok, %{id: id}} =
               PromptEngine.track_execution(
                 %{
                   prompt_id: "dt-p",
                   execution_time_ms: 1,
                   success: true,
                   timestamp: ~U[2024-01-02 03:04:05.123456Z],
                   metadata: %{seen: ~N[2024-05-06 07:08:09]}
                 },
                 opts
               )

      assert {:ok, %{rows: [row]}} = PromptEngine.query(:by_id, %{id: id}, opts)
      assert row.timestamp == "2024-01-02T03:04:05.123Z"
      assert row.metadata == %{"seen" => "2024-05-06T07:08:09Z"}

      assert {:ok, %{id: id2}} =
               PromptEngine.track_execution(%{prompt_id: "dt-p", execution_time_ms: 1, success: true, timestamp: ~N[2024-01-02 03:04:05]}, opts)

      assert {:ok, %{rows: [%{timestamp: "2024-01-02T03:04:05.000Z"}]}} = PromptEngine.query(:by_id, %{id: id2}, opts)

      offset = DateTime.from_naive!(~N[2024-01-02 05:04:05], "Etc/UTC") |> Map.merge(%{utc_offset: 7200, time_zone: "Etc/GMT-2", zone_abbr: "+02"})
      assert {:ok, %{id: id3}} = PromptEngine.track_feedback(%{prompt_id: "dt-p", feedback_type: :quality, rating: 4, timestamp: offset}, opts)
      assert {:ok, %{rows: [%{timestamp: "2024-01-02T03:04:05.000Z"}]}} = PromptEngine.query(:by_id, %{id: id3}, opts)
    end
  end

  describe "wrong shapes are {:error, %Error{reason: :bad_request}}, never a raise" do
    test "every public function", %{name: name} do
      o = [name: name]

      calls = [
        fn -> PromptEngine.echo(:x, o) end,
        fn -> PromptEngine.echo("text", o) end,
        fn -> PromptEngine.echo([1, 2], o) end,
        fn -> PromptEngine.echo(%URI{}, o) end,
        fn -> PromptEngine.echo(%{}, :not_opts) end,
        fn -> PromptEngine.echo(%{}, [1, 2]) end,
        fn -> PromptEngine.echo(%{}, name: "Name") end,
        fn -> PromptEngine.echo(%{}, name: name, timeout: "soon") end,
        fn -> PromptEngine.echo(%{}, name: name, queue: 1) end,
        fn -> PromptEngine.health(42) end,
        fn -> PromptEngine.stats("x") end,
        fn -> PromptEngine.call("health", %{}, o) end,
        fn -> PromptEngine.call(:echo, 5, o) end,
        fn -> PromptEngine.generate_prompt("c", "elixir", 7) end,
        fn -> PromptEngine.optimize_prompt("p", :x) end,
        fn -> PromptEngine.call_llm("m", [], 5) end,
        fn -> PromptEngine.cache_get("k", 1) end,
        fn -> PromptEngine.cache_put("k", 1, :bad) end,
        fn -> PromptEngine.cache_clear(5) end,
        fn -> PromptEngine.cache_stats(:bad) end,
        fn -> PromptEngine.track_execution("entry", o) end,
        fn -> PromptEngine.track_feedback([1], o) end,
        fn -> PromptEngine.track_evolution(nil, o) end,
        fn -> PromptEngine.track_ab_result(1.5, o) end,
        fn -> PromptEngine.track_context_signature(:x, o) end,
        fn -> PromptEngine.query(:by_id, "id", o) end,
        fn -> PromptEngine.train(:x) end,
        fn -> PromptEngine.score("p", "ctx", o) end,
        fn -> PromptEngine.get_template("t", 1) end,
        fn -> PromptEngine.search_templates("q", 5) end,
        fn -> PromptEngine.store_template(:t, o) end,
        fn -> PromptEngine.render_template("t", "vars", o) end,
        fn -> PromptEngine.get_sparc_prompt("s", 1, o) end,
        fn -> PromptEngine.list_templates(:x) end,
        fn -> PromptEngine.select_variant("t", ["a"], 3) end,
        fn -> PromptEngine.choose_prompt("exp", "base", "ctx", o) end,
        fn -> PromptEngine.choose_prompt(1, 2, 3, 4) end,
        fn -> PromptEngine.choose_prompt("exp", "base", %{}, :opts) end,
        fn -> PromptEngine.report_outcome(%{}, :yes, o) end,
        fn -> PromptEngine.report_outcome(%{prompt_id: "p", metadata: %{}}, true, :bad) end,
        fn -> PromptEngine.subscribe(name) end,
        fn -> PromptEngine.report_outcome(%{prompt_id: "p", metadata: %{}}, true, name: name, metadata: "x") end,
        fn -> PromptEngine.experiment("e", 3) end,
        fn -> PromptEngine.subscribe("x") end,
        fn -> PromptEngine.unsubscribe(42) end,
        # shapes the client passes on; the sidecar names the field
        fn -> PromptEngine.track_execution(%{prompt_id: 1, execution_time_ms: 1, success: true}, o) end,
        fn -> PromptEngine.generate_prompt(%{}, 5, o) end
      ]

      for {f, i} <- Enum.with_index(calls) do
        assert {:error, %Error{reason: :bad_request, message: m}} = f.(), "call ##{i}"
        assert is_binary(m)
      end
    end
  end

  describe "start options" do
    test "unknown options and wrong types are named" do
      assert {:error, %Error{reason: :bad_option, message: m}} = PromptEngine.start_link(name: Bad1, pool: 2)
      assert m =~ "unknown start option :pool" and m =~ ":pool_size"

      assert {:error, %Error{reason: :bad_option, message: "start option :pool_size must be a positive integer, got: \"2\""}} =
               PromptEngine.start_link(pool_size: "2")

      assert {:error, %Error{reason: :bad_option, message: "start option :timeout must be " <> _}} = PromptEngine.start_link(%{timeout: -1})
      assert {:error, %Error{reason: :bad_option}} = PromptEngine.start_link(env: "LOG_LEVEL=warn")
      # what an OS environment cannot hold is refused at start (Port.open/2 would raise in the
      # connection), and the value, which may be a secret, is not shown
      for env <- [[{"LLM_API_KEY=sk-env-1", "x"}], [{"", "x"}], [{"LLM_API_KEY", "sk-env-1" <> <<0>>}], [{"A\0B", "x"}], %{"X" => [0x110000]}] do
        assert {:error, %Error{reason: :bad_option, message: m}} = PromptEngine.start_link(name: BadEnv, env: env), inspect(env)
        assert m =~ "start option :env must be" and m =~ "without = or NUL"
        refute m =~ "sk-env-1"
      end

      assert {:error, %Error{reason: :bad_option}} = PromptEngine.start_link(name: "Str")
      assert {:error, %Error{reason: :bad_option}} = PromptEngine.start_link(executable: 5)
      assert {:error, %Error{reason: :bad_option}} = PromptEngine.start_link(data_dir: :tmp)
      assert {:error, %Error{reason: :bad_option}} = PromptEngine.start_link(:nope)
      # nothing was started for a rejected configuration
      assert {:error, %Error{reason: :no_instance}} = PromptEngine.health(name: Bad1)
    end

    test "the deployment options are accepted and passed through" do
      name = Module.concat(__MODULE__, "Deploy#{System.unique_integer([:positive])}")
      dir = Path.join(System.tmp_dir!(), "pe-ex-deploy-#{System.unique_integer([:positive])}")
      on_exit(fn -> File.rm_rf(dir) end)

      start_supervised!(
        {PromptEngine,
         name: name,
         data_dir: dir,
         database_url: "",
         node: System.find_executable("node"),
         capture_stderr: true,
         ready_timeout: 20_000,
         env: [{"LOG_LEVEL", "warn"}, {"PROMPT_ENGINE_DATA_DIR", dir}, {"DATABASE_URL", PromptEngine.TestHelper.pg_url!()}]},
        id: :deploy
      )

      assert {:ok, %{status: "ok"}} = PromptEngine.health(name: name)
    end

    test "under a supervisor, the reason is the Error" do
      assert {:error, {%Error{reason: :bad_option, message: "unknown start option :bogus" <> _}, _}} =
               start_supervised({PromptEngine, name: Bad2, bogus: 1}, id: :bad2)
    end
  end
end
