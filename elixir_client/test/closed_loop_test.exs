defmodule PromptEngine.ClosedLoopTest do
  use ExUnit.Case, async: false

  # The closed loop from Elixir through the real Port: choose_prompt / report_outcome only,
  # the engine proposes (offline: no LLM configured), serves and counts by itself.
  setup do
    dir = Path.join(System.tmp_dir!(), "pe-ex-loop-#{System.unique_integer([:positive])}")
    name = Module.concat(__MODULE__, "I#{System.unique_integer([:positive])}")

    start_supervised!(
      {PromptEngine,
       name: name,
       timeout: 30_000,
       env: [{"LOG_LEVEL", "warn"}, {"PROMPT_ENGINE_DATA_DIR", dir}, {"DATABASE_URL", ""}, {"LLM_URL", ""}, {"PROMPT_ENGINE_LOOP_AWAIT_PROPOSALS", "1"}]}
    )

    on_exit(fn -> File.rm_rf(dir) end)
    {:ok, name: name}
  end

  test "choose, report, and the experiment moves from the outcomes alone", %{name: name} do
    base = "Classify the support ticket {ticket} as billing, bug or other."
    opts = [name: name, timeout: 30_000]

    assert {:ok, first} = PromptEngine.choose_prompt("ticket_triage", base, %{model: "gpt-4o-mini"}, name: name)
    assert %{prompt: ^base, origin: :base, generation: 1, experiment: "ticket_triage", model: "gpt-4o-mini"} = first
    assert %{"experiment" => "ticket_triage", "model" => "gpt-4o-mini", "generation" => "1"} = first.metadata

    # Every variant keeps the {ticket} variable; the base "works" 20% of the time, every proposal 90%.
    results =
      for i <- 1..300 do
        {:ok, c} = PromptEngine.choose_prompt("ticket_triage", base, %{model: "gpt-4o-mini"}, opts)
        assert String.contains?(c.prompt, "{ticket}")
        success = if c.origin == :base, do: rem(i, 5) == 0, else: rem(i, 10) != 0
        :ok = PromptEngine.report_outcome(c, success, opts)
        c.origin
      end

    assert Enum.count(results, &(&1 != :base)) > 150

    assert {:ok, %{experiments: [exp]}} = PromptEngine.experiment("ticket_triage", opts)
    assert exp.outcomes == 300
    assert exp.leader.origin == :offline
    assert exp.improvement > 0.3
    assert Enum.all?(exp.variants, &(&1.state in [:active, :retired, :banned]))

    # Operators can pin; a pinned experiment serves only that variant.
    assert {:ok, %{experiments: [%{pinned: pinned}]}} = PromptEngine.experiment("ticket_triage", [action: :pin, prompt_id: exp.base.prompt_id] ++ opts)
    assert pinned == exp.base.prompt_id
    assert {:ok, %{prompt: ^base}} = PromptEngine.choose_prompt("ticket_triage", base, %{model: "gpt-4o-mini"}, opts)

    # Wrong shapes are errors, not crashes.
    assert {:error, %PromptEngine.Error{reason: :bad_request}} = PromptEngine.choose_prompt("ticket_triage", base, "not a map", opts)
    assert {:error, %PromptEngine.Error{reason: :bad_request}} = PromptEngine.report_outcome(%{}, :yes, opts)
  end
end
