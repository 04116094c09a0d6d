defmodule PromptEngine.ClosedLoopTest do
  use ExUnit.Case, async: false

  # The closed loop from Elixir through the real Port: choose_prompt / report_outcome only,
  # the engine proposes (offline: no LLM configured), serves and counts by itself.
  setup do
    dir = Path.join(System.tmp_dir!(), "pe-ex-loop-#{System.unique_integer([:positive])}")
    name = Module.concat(__MODULE__, "I#{System.unique_integer([:positive])}")

    # The suite's PostgreSQL, in a schema of this test's own (a fresh PGlite store costs seconds to create).
    start_supervised!(
      {PromptEngine,
       name: name,
       timeout: 30_000,
       database_url: PromptEngine.TestHelper.pg_url!(),
       schema: "loop_test_#{System.unique_integer([:positive])}",
       env: [{"LOG_LEVEL", "warn"}, {"PROMPT_ENGINE_DATA_DIR", dir}, {"LLM_URL", ""}, {"PROMPT_ENGINE_LOOP_AWAIT_PROPOSALS", "1"}]}
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

  test "graded outcomes: a score objective set on first use, outcome maps moving it, a bad map named with nothing stored", %{name: name} do
    base = "Summarise the ticket {ticket} in one sentence."
    opts = [name: name, timeout: 30_000]

    assert {:ok, _} = PromptEngine.choose_prompt("graded_summary", base, %{model: "m"}, [objective: %{kind: :score}] ++ opts)

    # A judge's score: the base earns 0.3, every proposal 0.8; each call also reports its latency and tokens.
    for _ <- 1..200 do
      {:ok, c} = PromptEngine.choose_prompt("graded_summary", base, %{model: "m"}, opts)
      score = if c.origin == :base, do: 0.3, else: 0.8
      :ok = PromptEngine.report_outcome(c, %{score: score, latency_ms: 120, input_tokens: 40, output_tokens: 12}, opts)
    end

    assert {:ok, %{experiments: [exp]}} = PromptEngine.experiment("graded_summary", opts)
    assert exp.objective.kind == :score
    assert exp.outcomes == 200
    assert exp.leader.origin == :offline
    assert exp.improvement > 0.3
    leader = Enum.find(exp.variants, &(&1.prompt_id == exp.leader.prompt_id))
    assert_in_delta leader.score_mean, 0.8, 1.0e-9
    assert_in_delta leader.latency_mean_ms, 120, 1.0e-9

    # Bad outcome maps are answered with the key named; nothing is counted for them.
    {:ok, c} = PromptEngine.choose_prompt("graded_summary", base, %{model: "m"}, opts)
    assert {:error, %PromptEngine.Error{reason: :bad_request, message: m1}} = PromptEngine.report_outcome(c, %{score: 1.5}, opts)
    assert m1 =~ "score"
    assert {:error, %PromptEngine.Error{reason: :bad_request, message: m2}} = PromptEngine.report_outcome(c, %{success: true, latency_ms: -1}, opts)
    assert m2 =~ "execution_time_ms"
    assert {:error, %PromptEngine.Error{reason: :bad_request, message: m3}} = PromptEngine.report_outcome(c, %{success: true, colour: 1}, opts)
    assert m3 =~ ":colour"
    assert {:ok, %{experiments: [%{outcomes: 200}]}} = PromptEngine.experiment("graded_summary", opts)
  end
end
