defmodule PromptEngine.TrackingTest do
  use ExUnit.Case, async: false

  # The tracking ops end to end through the client, on the sidecar's embedded PGlite store.
  setup do
    dir = Path.join(System.tmp_dir!(), "pe-ex-tracking-#{System.unique_integer([:positive])}")
    name = Module.concat(__MODULE__, "I#{System.unique_integer([:positive])}")
    start_supervised!({PromptEngine, name: name, env: [{"LOG_LEVEL", "warn"}, {"PROMPT_ENGINE_DATA_DIR", dir}, {"DATABASE_URL", ""}]})
    on_exit(fn -> File.rm_rf(dir) end)
    {:ok, name: name}
  end

  test "track ops answer with ids; queries and aggregates read them back", %{name: name} do
    id = "0f0e0d0c-0b0a-4908-8706-050403020100"
    opts = [name: name, timeout: 30_000]

    assert {:ok, %{id: ^id}} =
             PromptEngine.track_execution(
               %{id: id, prompt_id: "ex-p", execution_time_ms: 120, success: true, confidence_score: 0.9, metadata: %{"model" => "m"}},
               opts
             )

    assert {:ok, %{id: ^id}} = PromptEngine.track_execution(%{id: id, prompt_id: "ex-p", execution_time_ms: 1, success: false}, opts)
    assert {:ok, %{id: _}} = PromptEngine.track_execution(%{prompt_id: "ex-p", execution_time_ms: 80, success: false}, opts)
    assert {:ok, %{id: _}} = PromptEngine.track_feedback(%{prompt_id: "ex-p", feedback_type: :quality, rating: 5}, opts)

    assert {:ok, %{id: _}} =
             PromptEngine.track_evolution(
               %{original_prompt_id: "ex-p", evolved_prompt_id: "ex-q", evolution_type: :refinement, performance_improvement: 0.1},
               opts
             )

    assert {:ok, %{id: _}} =
             PromptEngine.track_ab_result(
               %{
                 test_id: "t",
                 variant_a_prompt_id: "ex-p",
                 variant_b_prompt_id: "ex-q",
                 winner: :a,
                 confidence_level: 0.9,
                 sample_size: 10,
                 test_duration: 1000,
                 metrics: %{"lift" => 0.2}
               },
               opts
             )

    assert {:ok, %{id: _}} =
             PromptEngine.track_context_signature(%{signature_hash: "s", project_tech_stack: ["elixir"], project_type: "web", complexity_level: "low"}, opts)

    assert {:ok, %{rows: [row]}} = PromptEngine.query(:by_id, %{id: id}, opts)
    assert %{kind: "execution", prompt_id: "ex-p", success: true, confidence_score: c, metadata: %{"model" => "m"}} = row
    assert is_float(c)
    assert {:ok, %{rows: [_, _]}} = PromptEngine.query(:prompt_executions, %{prompt_id: "ex-p"}, opts)
    assert {:ok, %{rows: [%{feedback_type: "quality"}]}} = PromptEngine.query(:recent_feedback, %{duration: "1h"}, opts)
    assert {:ok, %{prompts: [%{count: 2, successes: 1, success_rate: 0.5}]}} = PromptEngine.call(:prompt_stats, %{prompt_id: "ex-p"}, opts)

    assert {:error, %PromptEngine.Error{reason: :bad_request, message: "feedback_type: expected one of " <> _}} =
             PromptEngine.track_feedback(%{prompt_id: "ex-p", feedback_type: :vibes, rating: 1}, opts)
  end
end
