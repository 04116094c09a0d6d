defmodule PromptEngine.SecretsTest do
  # No secret anywhere: a database password, an API key and the dashboard token given to an
  # instance never appear in a log line, a crash report, a supervisor report, an error, the
  # state :sys.get_state/1 or :sys.get_status/1 returns, or a child spec — whatever happens
  # to the sidecar (killed, a handshake that never comes) or to its connection (crashed).
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog
  alias PromptEngine.{Error, TestHelper}

  @password "Pw-7f3c-SECRET-in-url"
  @api_key "sk-live-4b1d-SECRET-key"
  @token "tok-91ae-SECRET-dashboard"
  @inherited "inh-5c2e-SECRET-inherited"

  # Sees every :logger event as it is, crash reports and supervisor reports included, and
  # keeps both the raw event term and its formatted text.
  defmodule Sink do
    def log(event, %{config: %{pid: pid}}), do: send(pid, {:logged, inspect(event, limit: :infinity, printable_limit: :infinity), format(event)})

    defp format(%{msg: {:string, s}}), do: IO.chardata_to_string(s)

    defp format(%{msg: {:report, r}, meta: meta}) do
      case meta[:report_cb] do
        cb when is_function(cb, 1) -> cb |> apply([r]) |> then(fn {f, a} -> IO.chardata_to_string(:io_lib.format(f, a)) end)
        cb when is_function(cb, 2) -> IO.chardata_to_string(cb.(r, %{depth: :unlimited, chars_limit: :unlimited, single_line: false}))
        _ -> inspect(r, limit: :infinity, printable_limit: :infinity)
      end
    rescue
      _ -> inspect(r, limit: :infinity, printable_limit: :infinity)
    end

    defp format(%{msg: {f, a}}), do: IO.chardata_to_string(:io_lib.format(f, a))
  end

  setup do
    id = :"pe_secrets_#{System.unique_integer([:positive])}"
    :ok = :logger.add_handler(id, Sink, %{config: %{pid: self()}, level: :all})
    on_exit(fn -> :logger.remove_handler(id) end)
    :ok
  end

  defp secrets, do: [@password, @api_key, @token, @inherited]

  defp refute_secret(text, where) do
    for s <- secrets(), do: refute(text =~ s, "#{where} shows a secret (#{s}):\n#{text}")
  end

  defp collected(acc \\ []) do
    receive do
      {:logged, raw, text} -> collected([raw, text | acc])
    after
      0 -> Enum.reverse(acc)
    end
  end

  test "a sidecar killed, a connection crashed, a restart: no password, key or token in any log, report or state" do
    name = TestHelper.unique_name(__MODULE__)
    url = TestHelper.pg_url_with_password!(@password)

    opts = [
      name: name,
      pool_size: 2,
      data_dir: TestHelper.tmp_dir("pe-secrets"),
      database_url: url,
      dashboard: [port: free_port(), token: @token],
      env: [{"LOG_LEVEL", "debug"}, {"LLM_API_KEY", @api_key}, {"NATS_URL", "nats://nats:#{@password}@127.0.0.1:1"}],
      # a flag may carry the URL too
      args: ["--port-fds", "--database-url", url]
    ]

    spec = PromptEngine.child_spec(opts)
    refute_secret(inspect(spec, limit: :infinity, printable_limit: :infinity), "the child spec")

    logs =
      capture_log([level: :debug], fn ->
        {:ok, sup} = Supervisor.start_link([spec], strategy: :one_for_one)
        assert {:ok, %{status: _}} = PromptEngine.health(name: name, timeout: 30_000)
        [conn | _] = PromptEngine.Supervisor.connections(name)

        # every printable view of the running instance
        for {what, view} <- [
              {"state", :sys.get_state(conn)},
              {"status", :sys.get_status(conn)},
              {"instance supervisor state", :sys.get_state(PromptEngine.Supervisor.sup_name(name))},
              {"app supervisor state", :sys.get_state(sup)},
              {"info", PromptEngine.Connection.info(conn)}
            ] do
          refute_secret(inspect(view, limit: :infinity, printable_limit: :infinity), what)
        end

        # ... and the redacted view says what is configured
        {:status, _, _, [_, _, _, _, status_items]} = :sys.get_status(conn)
        assert inspect(status_items, limit: :infinity) =~ ":***@127.0.0.1"
        assert inspect(status_items, limit: :infinity) =~ ~s("--database-url", "postgres://)

        # the sidecar killed with calls in flight: error replies, exit logs, a restart
        %{os_pid: os_pid} = PromptEngine.Connection.info(conn)
        calls = for i <- 1..20, do: Task.async(fn -> PromptEngine.Connection.request(conn, :echo, %{i: i, delay_ms: 2_000}, timeout: 10_000) end)
        assert TestHelper.until(fn -> PromptEngine.Connection.info(conn).in_flight == 20 end, 5_000)
        {_, 0} = System.cmd("kill", ["-9", Integer.to_string(os_pid)])

        for r <- Task.await_many(calls, 15_000),
            do:
              (
                assert {:error, %Error{} = e} = r
                refute_secret(Exception.message(e), "an error")
              )

        assert TestHelper.until(fn -> match?(%{status: :ready, total_restarts: 1}, PromptEngine.Connection.info(conn)) end, 30_000)

        # the connection process itself crashes: a GenServer terminate report, a supervisor report
        :sys.terminate(conn, :crash_for_the_test)
        assert TestHelper.until(fn -> match?({:ok, _}, PromptEngine.health(name: name, timeout: 30_000)) end, 30_000)

        Supervisor.stop(sup)
      end)

    refute_secret(logs, "the captured log")
    assert logs =~ "exited with status 137"

    events = collected()
    text = Enum.join(events, "\n")
    assert text =~ "crash_for_the_test", "the crash report was not seen by the handler"
    assert text =~ "exited with status 137"
    refute_secret(text, "a :logger event (raw or formatted)")
  end

  test "a handshake that never comes, and bad start options: no secret in the error" do
    slow = Path.join(System.tmp_dir!(), "pe-slow-secret-#{System.unique_integer([:positive])}.sh")
    File.write!(slow, "#!/bin/sh\nsleep 5\n")
    File.chmod!(slow, 0o755)
    on_exit(fn -> File.rm(slow) end)
    url = "postgres://app:#{@password}@127.0.0.1:1/app"
    # a failed start_link also exits its caller (linked), as OTP does
    Process.flag(:trap_exit, true)

    logs =
      capture_log(fn ->
        assert {:error, %Error{} = e} =
                 PromptEngine.start_link(
                   name: TestHelper.unique_name(__MODULE__),
                   executable: slow,
                   node: false,
                   ready_timeout: 300,
                   database_url: url,
                   env: [{"LLM_API_KEY", @api_key}]
                 )

        refute_secret(inspect(e, limit: :infinity), "the start error")

        # a secret of the wrong type is not printed in the option error
        assert {:error, %Error{reason: :bad_option} = e} = PromptEngine.start_link(database_url: String.to_charlist(url))
        refute_secret(inspect(e, limit: :infinity) <> Exception.message(e), "the option error")
        assert {:error, %Error{reason: :bad_option} = e} = PromptEngine.start_link(env: [{"LLM_API_KEY", 42}, {"X", @api_key}])
        refute_secret(inspect(e, limit: :infinity), "the option error")
      end)

    refute_secret(logs, "the captured log")
    refute_secret(Enum.join(collected(), "\n"), "a :logger event")
  end

  test "the sidecar's own log lines are redacted before they reach Logger, secrets it inherits from the VM's environment too" do
    exe = Path.join(System.tmp_dir!(), "pe-leaky-#{System.unique_integer([:positive])}.sh")
    launcher = Path.expand("../../port/prompt_engine", __DIR__)
    line = ~s({"level":50,"time":1,"pid":1,"msg":"cannot connect to postgres://app:#{@password}@db/app","key":"#{@api_key}"})
    # Not given to the instance: the sidecar inherits it, as it inherits DATABASE_URL or LLM_API_KEY set for the release.
    System.put_env("PE_SECRETS_TEST_API_KEY", @inherited)
    on_exit(fn -> System.delete_env("PE_SECRETS_TEST_API_KEY") end)

    File.write!(
      exe,
      "#!/bin/sh\necho '#{line}' >&2\necho 'plain postgres://x:#{@password}@h/d' >&2\necho 'inherited #{@inherited} and ?password=#{@password}' >&2\nexec '#{launcher}' \"$@\"\n"
    )

    File.chmod!(exe, 0o755)
    on_exit(fn -> File.rm(exe) end)
    name = TestHelper.unique_name(__MODULE__)

    logs =
      capture_log(fn ->
        start_supervised!(
          {PromptEngine,
           name: name, executable: exe, database_url: "", data_dir: TestHelper.tmp_dir("pe-leaky"), env: [{"LOG_LEVEL", "warn"}, {"LLM_API_KEY", @api_key}]}
        )

        assert {:ok, _} = PromptEngine.health(name: name)
        seen = receive_until(&(&1 =~ "cannot connect to postgres://app:***@db/app"), 5_000)
        seen = if Enum.any?(seen, &(&1 =~ "plain postgres://x:***@h/d")), do: seen, else: seen ++ receive_until(&(&1 =~ "plain postgres://x:***@h/d"), 5_000)

        seen =
          if Enum.any?(seen, &(&1 =~ "inherited *** and ?password=***")),
            do: seen,
            else: seen ++ receive_until(&(&1 =~ "inherited *** and ?password=***"), 5_000)

        assert Enum.any?(seen, &(&1 =~ "plain postgres://x:***@h/d"))
        assert Enum.any?(seen, &(&1 =~ "inherited *** and ?password=***"))
        refute_secret(Enum.join(seen, "\n"), "a :logger event")
      end)

    refute_secret(logs, "the captured log")
  end

  # Logged texts until one satisfies `match?` (all of them), or [] after `ms`.
  defp receive_until(match?, ms, acc \\ []) do
    receive do
      {:logged, raw, text} ->
        acc = [raw, text | acc]
        if match?.(text), do: acc, else: receive_until(match?, ms, acc)
    after
      ms -> []
    end
  end

  defp free_port do
    {:ok, socket} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
    {:ok, port} = :inet.port(socket)
    :gen_tcp.close(socket)
    port
  end
end
