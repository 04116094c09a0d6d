defmodule PromptEngine.OrphanTest do
  use ExUnit.Case, async: false

  # An `elixir` OS process owns the port; it is killed with SIGKILL; the sidecar must be gone within 1 s.
  test "killing the VM that owns the port leaves no Node process" do
    ebin = Path.expand("../_build/test/lib/prompt_engine/ebin", __DIR__)

    script = """
    {:ok, _} = PromptEngine.start_link(name: Orphan, env: [{"LOG_LEVEL", "warn"}])
    {:ok, %{os_pid: pid}} = PromptEngine.health(name: Orphan)
    IO.puts("NODE_PID=\#{pid}")
    Process.sleep(:infinity)
    """

    port = Port.open({:spawn_executable, System.find_executable("elixir")}, [:binary, :exit_status, :stderr_to_stdout, args: ["-pa", ebin, "-e", script]])
    {:os_pid, vm_pid} = Port.info(port, :os_pid)
    node_pid = wait_for_pid(port, "")
    assert alive?(node_pid)

    {_, 0} = System.cmd("kill", ["-9", Integer.to_string(vm_pid)])
    t0 = System.monotonic_time(:millisecond)
    assert wait_gone(node_pid, 1_000), "node process #{node_pid} still alive 1 s after the VM was killed"
    IO.puts(:stderr, "sidecar gone #{System.monotonic_time(:millisecond) - t0} ms after SIGKILL of the VM")
  end

  defp wait_for_pid(port, acc) do
    receive do
      {^port, {:data, data}} ->
        acc = acc <> data

        case Regex.run(~r/NODE_PID=(\d+)/, acc) do
          [_, pid] -> String.to_integer(pid)
          nil -> wait_for_pid(port, acc)
        end

      {^port, {:exit_status, s}} ->
        flunk("the elixir process exited (#{s}) before printing the pid: #{acc}")
    after
      20_000 -> flunk("no pid from the elixir process: #{acc}")
    end
  end

  defp alive?(pid) do
    case File.read("/proc/#{pid}/stat") do
      {:ok, stat} -> not String.contains?(stat, ") Z ")
      _ -> false
    end
  end

  defp wait_gone(pid, ms) when ms <= 0, do: not alive?(pid)

  defp wait_gone(pid, ms) do
    if alive?(pid),
      do:
        (
          Process.sleep(20)
          wait_gone(pid, ms - 20)
        ),
      else: true
  end
end
