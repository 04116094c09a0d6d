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
    start_supervised!({PromptEngine, [name: name, env: [{"LOG_LEVEL", "warn"}, {"PROMPT_ENGINE_DATA_DIR", dir}, {"DATABASE_URL", ""}]] ++ opts}, id: name)
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
    assert_receive {:telemetry, [:prompt_engine, :request, :stop], _, %{op: :no_such_op, result: :error, reason: :unknown_op, error: %Error{reason: :unknown_op}}}

    # a pool-wide op is one event
    assert {:ok, _} = PromptEngine.cache_stats(name: name)
    assert_receive {:telemetry, [:prompt_engine, :request, :start], _, %{op: :cache_stats}}
    assert_receive {:telemetry, [:prompt_engine, :request, :stop], _, %{op: :cache_stats, result: :ok}}
    refute_receive {:telemetry, _, _, %{op: :cache_stats}}, 100

    # a bang variant that raises: :exception instead of :stop
    assert_raise Error, fn -> PromptEngine.call!(:no_such_op, %{}, name: name) end
    assert_receive {:telemetry, [:prompt_engine, :request, :start], _, %{op: :no_such_op}}
    assert_receive {:telemetry, [:prompt_engine, :request, :exception], %{duration: _}, %{op: :no_such_op, kind: :error, reason: %Error{reason: :unknown_op}, stacktrace: [_ | _]}}
    refute_receive {:telemetry, [:prompt_engine, :request, :stop], _, _}, 100

    # ... and one that succeeds is an ordinary start/stop
    assert %{status: "ok"} = PromptEngine.health!(name: name)
    assert_receive {:telemetry, [:prompt_engine, :request, :stop], _, %{op: :health, result: :ok}}
  end
end
