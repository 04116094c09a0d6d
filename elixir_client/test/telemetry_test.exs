defmodule PromptEngine.TelemetryTest do
  use ExUnit.Case, async: false

  alias PromptEngine.Error

  # :telemetry cannot be installed here (no Hex), so a stand-in module named :telemetry is
  # compiled by the test; the client only ever calls :telemetry.execute/3.
  @fake """
  defmodule :telemetry do
    def execute(event, measurements, metadata) do
      case Process.whereis(:pe_telemetry_test) do
        nil -> :ok
        pid -> send(pid, {:telemetry, event, measurements, metadata})
      end

      :ok
    end
  end
  """

  setup do
    refute Code.ensure_loaded?(:telemetry), "a real :telemetry is loaded; this test defines its own"
    Process.register(self(), :pe_telemetry_test)

    on_exit(fn ->
      :code.purge(:telemetry)
      :code.delete(:telemetry)
    end)

    :ok
  end

  defp start(opts \\ []) do
    name = Module.concat(__MODULE__, "I#{System.unique_integer([:positive])}")
    dir = Path.join(System.tmp_dir!(), "pe-ex-tel-#{System.unique_integer([:positive])}")
    on_exit(fn -> File.rm_rf(dir) end)

    start_supervised!({PromptEngine, [name: name, data_dir: dir, database_url: PromptEngine.TestHelper.pg_url!(), env: [{"LOG_LEVEL", "warn"}]] ++ opts},
      id: name
    )

    name
  end

  test "events only when :telemetry was loaded at the instance's start; start/stop/exception shapes" do
    without = start()
    assert {:ok, _} = PromptEngine.health(name: without)
    refute_receive {:telemetry, _, _, _}, 100

    Code.compile_string(@fake)
    # the check is cached per instance: the one started before still emits nothing
    assert {:ok, _} = PromptEngine.health(name: without)
    refute_receive {:telemetry, _, _, _}, 100

    name = start(pool_size: 2)

    assert {:ok, _} = PromptEngine.health(name: name)
    assert_receive {:telemetry, [:prompt_engine, :request, :start], %{system_time: st, monotonic_time: _}, %{op: :health, instance: ^name}}
    assert is_integer(st)
    assert_receive {:telemetry, [:prompt_engine, :request, :stop], %{duration: d}, %{op: :health, instance: ^name, result: :ok, reason: nil, error: nil}}
    assert is_integer(d) and d > 0

    assert {:error, _} = PromptEngine.call(:no_such_op, %{}, name: name)
    assert_receive {:telemetry, [:prompt_engine, :request, :start], _, %{op: :no_such_op}}

    assert_receive {:telemetry, [:prompt_engine, :request, :stop], _,
                    %{op: :no_such_op, result: :error, reason: :unknown_op, error: %Error{reason: :unknown_op}}}

    # a pool-wide op is one event
    assert {:ok, _} = PromptEngine.cache_stats(name: name)
    assert_receive {:telemetry, [:prompt_engine, :request, :start], _, %{op: :cache_stats}}
    assert_receive {:telemetry, [:prompt_engine, :request, :stop], _, %{op: :cache_stats, result: :ok}}
    refute_receive {:telemetry, _, _, %{op: :cache_stats}}, 100

    # a bang variant that raises: :exception instead of :stop
    assert_raise Error, fn -> PromptEngine.call!(:no_such_op, %{}, name: name) end
    assert_receive {:telemetry, [:prompt_engine, :request, :start], _, %{op: :no_such_op}}

    assert_receive {:telemetry, [:prompt_engine, :request, :exception], %{duration: _},
                    %{op: :no_such_op, kind: :error, reason: %Error{reason: :unknown_op}, stacktrace: [_ | _]}}

    refute_receive {:telemetry, [:prompt_engine, :request, :stop], _, _}, 100

    # ... and one that succeeds is an ordinary start/stop
    assert %{status: "ok"} = PromptEngine.health!(name: name)
    assert_receive {:telemetry, [:prompt_engine, :request, :stop], _, %{op: :health, result: :ok}}
  end

  test "sidecar lifecycle events: started, exited (with its status), restarted, started again; gave_up past max_restarts" do
    Code.compile_string(@fake)
    name = start(max_restarts: 2, backoff_initial: 50)
    assert_receive {:telemetry, [:prompt_engine, :sidecar, :started], %{duration: d}, %{instance: ^name, index: 1, os_pid: os_pid, restarts: 0}}, 60_000
    assert is_integer(d) and d > 0

    {_, 0} = System.cmd("kill", ["-9", Integer.to_string(os_pid)])

    assert_receive {:telemetry, [:prompt_engine, :sidecar, :exited], %{uptime: up}, %{instance: ^name, index: 1, os_pid: ^os_pid, status: 137, failed: 0}},
                   10_000

    assert is_integer(up)

    assert_receive {:telemetry, [:prompt_engine, :sidecar, :restarted], %{delay: 50}, %{instance: ^name, index: 1, attempt: 1, restarts: 1, last_exit: 137}},
                   10_000

    assert_receive {:telemetry, [:prompt_engine, :sidecar, :started], _, %{instance: ^name, os_pid: second, restarts: 1}}, 60_000

    {_, 0} = System.cmd("kill", ["-9", Integer.to_string(second)])
    assert_receive {:telemetry, [:prompt_engine, :sidecar, :restarted], %{delay: 100}, %{attempt: 2, restarts: 2}}, 10_000
    assert_receive {:telemetry, [:prompt_engine, :sidecar, :started], _, %{os_pid: third, restarts: 2}}, 60_000
    {_, 0} = System.cmd("kill", ["-9", Integer.to_string(third)])
    assert_receive {:telemetry, [:prompt_engine, :sidecar, :gave_up], %{}, %{instance: ^name, index: 1, restarts: 2, last_exit: 137}}, 10_000
  end
end
