defmodule PromptEngineTest do
  use ExUnit.Case, async: false

  # One instance per test, under the test's own supervisor (start_supervised).
  setup context do
    name = Module.concat(__MODULE__, "I#{System.unique_integer([:positive])}")
    opts = Map.get(context, :engine_opts, [])
    dir = Path.join(System.tmp_dir!(), "pe-ex-#{System.unique_integer([:positive])}")
    # PostgreSQL: a pool needs one every sidecar shares (PGlite is one process's), and it opens in a fraction of PGlite's time.
    start_supervised!({PromptEngine, [name: name, data_dir: dir, database_url: PromptEngine.TestHelper.pg_url!(), env: [{"LOG_LEVEL", "warn"}]] ++ opts})
    on_exit(fn -> File.rm_rf(dir) end)
    # The handshake runs after start (calls made before it wait for it); the overload and
    # kill tests count on a sidecar that is already up.
    {:ok, _} = PromptEngine.health(name: name, timeout: 20_000)
    {:ok, name: name}
  end

  describe "ops served so far round-trip with the right shapes" do
    test "echo returns its map unchanged, floats stay floats", %{name: name} do
      args = %{a: 1, f: 1.0, zero: 0.0, s: "héllo", l: [1, 2.5], t: {:ok, :x}, nested: %{"user_key" => "v"}}
      assert {:ok, ^args} = PromptEngine.echo(args, name: name)
      assert {:ok, %{f: f, zero: z}} = PromptEngine.echo(args, name: name)
      assert is_float(f) and is_float(z)
    end

    test "health and stats", %{name: name} do
      assert {:ok, %{status: "ok", os_pid: pid, version: v, protocol: 1}} = PromptEngine.health(name: name)
      assert is_integer(pid) and is_binary(v)
      assert {:ok, %{uptime_ms: up, ops: ops}} = PromptEngine.stats(name: name)
      assert is_integer(up) and is_map(ops)
    end

    test "cache ops keep the NIF's names and shapes", %{name: name} do
      assert :ok = PromptEngine.cache_clear(name: name)
      assert {:ok, %{found: false}} = PromptEngine.cache_get("k", name: name)
      assert :ok = PromptEngine.cache_put("k", %{answer: 42, score: 0.5}, name: name)
      assert {:ok, %{found: true, value: %{answer: 42, score: 0.5}}} = PromptEngine.cache_get("k", name: name)
      assert {:ok, %{total_entries: 1, hits: 1, misses: 1, hit_rate: rate}} = PromptEngine.cache_stats(name: name)
      assert is_float(rate) and rate == 0.5
    end

    test "optimize_prompt returns the documented fields", %{name: name} do
      assert {:ok, r} = PromptEngine.optimize_prompt("Write a {{language}} parser for {{context}}.", name: name, breadth: 3, depth: 1, timeout: 30_000)

      assert %{
               prompt: _,
               optimized_prompt: opt,
               optimization_score: s,
               confidence: c,
               improvement_summary: _,
               candidates: [_ | _],
               cached: false,
               model_version: _
             } = r

      assert is_float(s) and is_float(c)
      assert opt =~ "{{language}}" and opt =~ "{{context}}"
    end
  end

  describe "errors are values, never crashes" do
    test "unknown op", %{name: name} do
      assert {:error, %PromptEngine.Error{reason: :unknown_op, message: msg}} = PromptEngine.call(:no_such_op, %{}, name: name)
      assert msg =~ "no_such_op"
    end

    test "bad arguments name the field", %{name: name} do
      assert {:error, %PromptEngine.Error{reason: :bad_request, message: "delay_ms: expected an integer in 0..60000"}} =
               PromptEngine.echo(%{delay_ms: "soon"}, name: name)

      assert {:error, %PromptEngine.Error{reason: :bad_request, message: "breadth: expected an integer in 1..50"}} =
               PromptEngine.optimize_prompt("x", name: name, breadth: 0)
    end

    test "timeout cancels the work in the sidecar and drops the late reply", %{name: name} do
      t0 = System.monotonic_time(:millisecond)
      assert {:error, %PromptEngine.Error{reason: :timeout, op: :echo}} = PromptEngine.echo(%{delay_ms: 3_000}, name: name, timeout: 200)
      assert System.monotonic_time(:millisecond) - t0 < 1_000
      # the sidecar saw the cancel: its in-flight count drops to zero long before 3 s
      Process.sleep(100)
      assert {:ok, %{in_flight: 0}} = PromptEngine.health(name: name)
      refute_receive _, 100
    end

    @tag engine_opts: [max_in_flight: 5]
    test "overload is refused, or waited for with queue: true", %{name: name} do
      slow = for _ <- 1..5, do: Task.async(fn -> PromptEngine.echo(%{delay_ms: 500}, name: name) end)
      Process.sleep(100)
      assert {:error, %PromptEngine.Error{reason: :overloaded}} = PromptEngine.echo(%{}, name: name)
      assert {:ok, %{n: 1}} = PromptEngine.echo(%{n: 1}, name: name, queue: true, timeout: 3_000)
      assert Enum.all?(Task.await_many(slow), &match?({:ok, _}, &1))
    end

    @tag engine_opts: [max_in_flight: 1]
    test "a queued call that starts late and then times out names the caller's own timeout", %{name: name} do
      first = Task.async(fn -> PromptEngine.echo(%{delay_ms: 200}, name: name) end)
      Process.sleep(50)
      # waits about 150 ms for the slot, then runs with what is left of its 600 ms
      assert {:error, %PromptEngine.Error{reason: :timeout, message: msg}} = PromptEngine.echo(%{delay_ms: 2_000}, name: name, queue: true, timeout: 600)
      assert msg =~ "no reply within 600 ms"
      assert {:ok, _} = Task.await(first)
    end

    @tag engine_opts: [max_in_flight: 1]
    test "a queued caller that dies while it waits: its request is never sent", %{name: name} do
      [conn] = PromptEngine.Supervisor.connections(name)

      echoes = fn ->
        {:ok, %{ops: ops}} = PromptEngine.Connection.request(conn, :stats, %{}, queue: true)
        get_in(ops, ["echo", :calls]) || 0
      end

      before = echoes.()
      slow = Task.async(fn -> PromptEngine.echo(%{delay_ms: 400}, name: name) end)
      me = self()

      waiter =
        spawn(fn ->
          send(me, :queued)
          PromptEngine.echo(%{n: 2}, name: name, queue: true, timeout: 5_000)
        end)

      assert_receive :queued
      Process.sleep(100)
      Process.exit(waiter, :kill)
      assert {:ok, _} = Task.await(slow)
      # after the slot freed: the slow echo ran, the dead caller's did not (stats queues behind them, in order)
      assert echoes.() == before + 1
    end

    test "a caller that dies has its request cancelled", %{name: name} do
      pid = spawn(fn -> PromptEngine.echo(%{delay_ms: 5_000}, name: name, timeout: 10_000) end)
      Process.sleep(150)
      assert {:ok, %{in_flight: 1}} = PromptEngine.health(name: name)
      Process.exit(pid, :kill)
      Process.sleep(150)
      assert {:ok, %{in_flight: 0}} = PromptEngine.health(name: name)
    end
  end

  test "1,000 concurrent callers are all answered and matched", %{name: name} do
    results =
      1..1_000
      |> Task.async_stream(fn i -> {i, PromptEngine.echo(%{i: i, f: i / 2}, name: name, timeout: 20_000)} end, max_concurrency: 1_000, timeout: 30_000)
      |> Enum.map(fn {:ok, r} -> r end)

    assert length(results) == 1_000
    for {i, r} <- results, do: assert({:ok, %{i: ^i}} = r)
  end

  @tag engine_opts: [pool_size: 2]
  test "pool_size spreads requests over several sidecars", %{name: name} do
    pids = for _ <- 1..10, into: MapSet.new(), do: elem(PromptEngine.health(name: name), 1).os_pid
    assert MapSet.size(pids) == 2
    # each sidecar has its own cache: keys are routed so put and get meet, stats are summed
    for i <- 1..20, do: :ok = PromptEngine.cache_put("k#{i}", i, name: name)
    for i <- 1..20, do: assert({:ok, %{found: true, value: ^i}} = PromptEngine.cache_get("k#{i}", name: name))
    assert {:ok, %{total_entries: 20, hits: 20, misses: 0, hit_rate: 1.0}} = PromptEngine.cache_stats(name: name)
    assert :ok = PromptEngine.cache_clear(name: name)
    assert {:ok, %{total_entries: 0}} = PromptEngine.cache_stats(name: name)
  end

  test "kill -9 of the sidecar with 200 calls in flight: every caller gets an error, the sidecar is restarted", %{name: name} do
    {:ok, %{os_pid: os_pid}} = PromptEngine.health(name: name)
    tasks = for i <- 1..200, do: Task.async(fn -> PromptEngine.echo(%{i: i, delay_ms: 3_000}, name: name, timeout: 10_000) end)
    Process.sleep(300)
    {_, 0} = System.cmd("kill", ["-9", Integer.to_string(os_pid)])
    results = Task.await_many(tasks, 5_000)
    assert Enum.all?(results, &match?({:error, %PromptEngine.Error{reason: :sidecar_exited, details: 137}}, &1)), inspect(Enum.uniq(results))
    # the next call is served by a fresh sidecar
    assert {:ok, %{status: "ok", os_pid: new_pid}} = PromptEngine.health(name: name, timeout: 15_000)
    assert new_pid != os_pid
    assert Process.alive?(self())
  end
end
