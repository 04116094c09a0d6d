defmodule PromptEngine.LogTest do
  use ExUnit.Case, async: false

  @launcher Path.expand("../../port/prompt_engine", __DIR__)

  # An Erlang :logger handler that forwards events to the test process.
  defmodule Handler do
    def log(%{level: level, msg: msg, meta: meta}, %{config: %{pid: pid}}) do
      text =
        case msg do
          {:string, s} -> IO.chardata_to_string(s)
          {:report, r} -> inspect(r)
          {f, a} -> IO.chardata_to_string(:io_lib.format(f, a))
        end

      if meta[:prompt_engine], do: send(pid, {:log, level, text, meta})
    end
  end

  setup do
    id = :"pe_log_test_#{System.unique_integer([:positive])}"
    :ok = :logger.add_handler(id, Handler, %{config: %{pid: self()}, level: :all})
    on_exit(fn -> :logger.remove_handler(id) end)
    dir = Path.join(System.tmp_dir!(), "pe-ex-log-#{System.unique_integer([:positive])}")
    on_exit(fn -> File.rm_rf(dir) end)
    {:ok, dir: dir}
  end

  defp start(exe, dir, level) do
    name = Module.concat(__MODULE__, "I#{System.unique_integer([:positive])}")
    start_supervised!({PromptEngine, name: name, executable: exe, data_dir: dir, database_url: PromptEngine.TestHelper.pg_url!(), env: [{"LOG_LEVEL", level}]})
    name
  end

  test "pino lines reach Logger with mapped levels, the message and fields as metadata; other lines as they are", %{dir: dir} do
    lines = [
      ~s({"level":10,"time":1,"pid":11,"name":"prompt-engine","msg":"l10","op":"train"}),
      ~s({"level":20,"time":1,"pid":11,"msg":"l20"}),
      ~s({"level":30,"time":1,"pid":11,"msg":"l30 caf\\u00e9 \\ud83d\\ude00","in_flight":3}),
      ~s({"level":40,"time":1,"pid":11,"msg":"l40","err":{"message":"boom","code":"E1"},"line":7}),
      ~s({"level":50,"time":1,"pid":11,"msg":"l50","ratio":0.25}),
      ~s({"level":60,"time":1,"pid":11,"msg":"l60"}),
      "not json: node crashed at foo.js:1"
    ]

    exe = Path.join(System.tmp_dir!(), "pe-noisy-#{System.unique_integer([:positive])}.sh")
    File.write!(exe, "#!/bin/sh\n" <> Enum.map_join(lines, "", &"echo '#{&1}' >&2\n") <> "exec '#{@launcher}' \"$@\"\n")
    File.chmod!(exe, 0o755)
    on_exit(fn -> File.rm(exe) end)

    name = start(exe, dir, "warn")
    # frames are unaffected by what went to stderr
    assert {:ok, %{status: "ok"}} = PromptEngine.health(name: name)

    assert_receive {:log, :debug, "l10", m10}, 5_000
    assert m10[:op] == "train" and m10[:os_pid] == 11 and m10[:instance] == name
    refute Map.has_key?(m10, :time) and Map.has_key?(m10, :msg)
    assert_receive {:log, :debug, "l20", _}, 5_000
    assert_receive {:log, :info, "l30 café 😀", %{in_flight: 3}}, 5_000
    assert_receive {:log, :warning, "l40", m40}, 5_000
    assert m40[:err] == %{"message" => "boom", "code" => "E1"}
    # a field named like Logger's own metadata does not overwrite it
    assert m40[:sidecar_line] == 7
    assert_receive {:log, :error, "l50", %{ratio: 0.25}}, 5_000
    assert_receive {:log, :error, "l60", _}, 5_000
    assert_receive {:log, :warning, "not json: node crashed at foo.js:1", _}, 5_000
  end

  test "the real sidecar's pino logs reach Logger", %{dir: dir} do
    name = start(PromptEngine.default_executable(), dir, "debug")
    assert {:ok, _} = PromptEngine.optimize_prompt("Write a {{language}} parser.", name: name, breadth: 2, depth: 1, timeout: 30_000)
    assert_receive {:log, :debug, "copro round", meta}, 5_000
    assert is_integer(meta[:os_pid]) and meta[:instance] == name
  end

  test "capture_stderr: false leaves stderr alone", %{dir: dir} do
    name = Module.concat(__MODULE__, "NoCapture")

    start_supervised!(
      {PromptEngine, name: name, capture_stderr: false, data_dir: dir, database_url: PromptEngine.TestHelper.pg_url!(), env: [{"LOG_LEVEL", "debug"}]}
    )

    assert {:ok, _} = PromptEngine.optimize_prompt("Write a parser.", name: name, breadth: 2, depth: 1, timeout: 30_000)
    refute_receive {:log, _, "copro round", _}, 300
  end

  test "JSON decoding of log lines" do
    assert {:ok, %{"a" => [1, -2.5, 1.0e3, true, false, nil, "x\"y\n"], "b" => %{}}} =
             PromptEngine.LogRelay.decode_json(~s({"a":[1,-2.5,1e3,true,false,null,"x\\"y\\n"],"b":{}}))

    assert :error = PromptEngine.LogRelay.decode_json(~s|{"a":1|)
    assert :error = PromptEngine.LogRelay.decode_json(~s({"a":1} trailing))
    assert {:warning, "{\"level\":", []} = PromptEngine.LogRelay.parse(~s|{"level":|)
    # the trainer's progress lines (plain text on stderr) are progress, not warnings
    assert {:info, "[train] epoch 3: train loss 0.5012, validation loss 0.5120", []} =
             PromptEngine.LogRelay.parse("[train] epoch 3: train loss 0.5012, validation loss 0.5120")

    assert {:info, "[train] 2662 examples (532 held out)", []} = PromptEngine.LogRelay.parse("[train] 2662 examples (532 held out)")
    assert {:warning, "Error: boom", []} = PromptEngine.LogRelay.parse("Error: boom")
  end
end
