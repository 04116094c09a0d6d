defmodule PromptEngine.OptionsTest do
  # Typos are errors, one calling convention, timeout: everywhere.
  use ExUnit.Case, async: false

  alias PromptEngine.{Error, TestHelper}

  setup_all do
    name = TestHelper.unique_name(__MODULE__)
    dir = Path.join(System.tmp_dir!(), "pe-opts-#{System.unique_integer([:positive])}")
    {:ok, sup} = PromptEngine.start_link(name: name, data_dir: dir, database_url: TestHelper.pg_url!(), env: [{"LOG_LEVEL", "warn"}])
    Process.unlink(sup)

    on_exit(fn ->
      Supervisor.stop(sup)
      File.rm_rf(dir)
    end)

    {:ok, name: name}
  end

  @choice %{prompt_id: "p", metadata: %{"experiment" => "opts_exp", "model" => "m", "generation" => "1"}}

  # One call of every public function, with `opts` as its options.
  defp every_function(opts) do
    [
      {:call, fn -> PromptEngine.call(:health, %{}, opts) end},
      {:generate_prompt, fn -> PromptEngine.generate_prompt("ctx", "elixir", opts) end},
      {:optimize_prompt, fn -> PromptEngine.optimize_prompt("Write a parser.", [breadth: 2, depth: 1] ++ opts) end},
      {:call_llm, fn -> PromptEngine.call_llm("m", [%{role: "user", content: "hi"}], opts) end},
      {:cache_get, fn -> PromptEngine.cache_get("k", opts) end},
      {:cache_put, fn -> PromptEngine.cache_put("k", 1, opts) end},
      {:cache_clear, fn -> PromptEngine.cache_clear(opts) end},
      {:cache_stats, fn -> PromptEngine.cache_stats(opts) end},
      {:track_execution, fn -> PromptEngine.track_execution(%{prompt_id: "opts-p", execution_time_ms: 1, success: true}, opts) end},
      {:track_feedback, fn -> PromptEngine.track_feedback(%{prompt_id: "opts-p", feedback_type: :quality, rating: 4}, opts) end},
      {:track_evolution,
       fn ->
         PromptEngine.track_evolution(%{original_prompt_id: "a", evolved_prompt_id: "b", evolution_type: :refinement, performance_improvement: 0.1}, opts)
       end},
      {:track_ab_result,
       fn ->
         PromptEngine.track_ab_result(
           %{test_id: "t", variant_a_prompt_id: "a", variant_b_prompt_id: "b", winner: :a, confidence_level: 0.9, sample_size: 1, test_duration: 1},
           opts
         )
       end},
      {:track_context_signature, fn -> PromptEngine.track_context_signature(%{signature_hash: "s", project_type: "web", complexity_level: "low"}, opts) end},
      {:query, fn -> PromptEngine.query(:prompt_executions, %{prompt_id: "opts-p"}, opts) end},
      {:train, fn -> PromptEngine.train([min_samples: 10_000_000] ++ opts) end},
      {:score, fn -> PromptEngine.score("Classify.", %{model: "m"}, opts) end},
      {:get_template, fn -> PromptEngine.get_template("sparc_completion", opts) end},
      {:search_templates, fn -> PromptEngine.search_templates("sparc", opts) end},
      {:store_template, fn -> PromptEngine.store_template(%{template_name: "opts_t", template_content: "Hi {{name}}", template_type: "command"}, opts) end},
      {:render_template, fn -> PromptEngine.render_template("ex_rules", %{"context" => "go"}, opts) end},
      {:get_sparc_prompt, fn -> PromptEngine.get_sparc_prompt("specification", %{"language" => "elixir"}, opts) end},
      {:list_templates, fn -> PromptEngine.list_templates(opts) end},
      {:select_variant, fn -> PromptEngine.select_variant("t", ["a", "b"], opts) end},
      {:choose_prompt, fn -> PromptEngine.choose_prompt("opts_exp", "Classify.", %{model: "m"}, opts) end},
      {:report_outcome, fn -> PromptEngine.report_outcome(@choice, true, opts) end},
      {:experiment, fn -> PromptEngine.experiment("opts_exp", opts) end},
      {:health, fn -> PromptEngine.health(opts) end},
      {:stats, fn -> PromptEngine.stats(opts) end},
      {:echo, fn -> PromptEngine.echo(%{n: 1}, opts) end},
      {:subscribe, fn -> PromptEngine.subscribe(opts) end},
      {:unsubscribe, fn -> PromptEngine.unsubscribe(opts) end}
    ]
  end

  test "the list above covers every public function" do
    covered = every_function([]) |> Enum.map(&elem(&1, 0)) |> MapSet.new()

    public =
      for {f, _} <- PromptEngine.__info__(:functions),
          not String.ends_with?(Atom.to_string(f), "!"),
          f not in [:child_spec, :start_link, :default_executable],
          into: MapSet.new(),
          do: f

    assert MapSet.difference(public, covered) |> MapSet.to_list() == []
  end

  test "a mistyped option is refused by every function, naming the known ones and the closest", %{name: name} do
    for {fun, call} <- every_function(name: name, tiemout: 5_000) do
      assert {:error, %Error{reason: :bad_request, message: msg}} = call.(), "#{fun} took tiemout:"
      assert msg =~ "tiemout: unknown option of #{fun} (did you mean timeout?); known: ", "#{fun}: #{msg}"
      assert msg =~ "name" and msg =~ "timeout"
    end

    # the issue's own example, and the bang form raising the same
    assert {:error, %Error{message: "execution_time: unknown option of report_outcome (did you mean execution_time_ms?); known: " <> _}} =
             PromptEngine.report_outcome(@choice, true, name: name, execution_time: 5)

    assert_raise Error, ~r/nmae: unknown option of health \(did you mean name\?\)/, fn -> PromptEngine.health!(nmae: name) end
    # an op's own option mistyped: the op table's names are the known ones
    assert {:error, %Error{message: "bredth: unknown option of optimize_prompt (did you mean breadth?)" <> _}} =
             PromptEngine.optimize_prompt("x", name: name, bredth: 2)

    assert {:error, %Error{message: "temprature: unknown option of call_llm (did you mean temperature?)" <> _}} =
             PromptEngine.call_llm("m", [], name: name, temprature: 0)

    assert {:error, %Error{message: "limt: unknown option of search_templates (did you mean limit?)" <> _}} =
             PromptEngine.search_templates("x", name: name, limt: 2)

    assert {:error, %Error{message: "stirct: unknown option of call (did you mean strict?)" <> _}} =
             PromptEngine.call(:render_template, %{template_id: "ex_rules"}, name: name, stirct: true)
  end

  test "every function takes timeout: in every arity, and the instance only as name:", %{name: name} do
    for {fun, call} <- every_function(name: name, timeout: 30_000) do
      result = call.()
      refute match?({:error, %Error{reason: :bad_request, message: "timeout" <> _}}, result), "#{fun}: #{inspect(result)}"
      refute match?({:error, %Error{reason: :no_instance}}, result), "#{fun}: #{inspect(result)}"
    end

    # a timeout that passes is the call's own, in the instance-first-less forms too
    assert {:error, %Error{reason: :timeout}} = PromptEngine.echo(%{delay_ms: 1_000}, name: name, timeout: 50)
    assert {:error, %Error{reason: :timeout}} = PromptEngine.choose_prompt("opts_exp", "Classify.", %{model: "m"}, name: name, timeout: 0)

    # past Erlang's timers: refused to the caller, nothing sent, nothing raised
    for fun_call <- [fn -> PromptEngine.health(name: name, timeout: 100 * 86_400_000) end, fn -> PromptEngine.echo(%{}, name: name, timeout: 2 ** 40) end] do
      assert {:error, %Error{reason: :bad_request, message: msg}} = fun_call.()
      assert msg =~ "timeout: expected a non-negative integer (ms) of at most 4294962295"
    end

    [conn | _] = PromptEngine.Supervisor.connections(name)

    for t <- [:infinity, 100 * 86_400_000, -1] do
      assert {:error, %Error{reason: :bad_request, message: "timeout: " <> _}} = PromptEngine.Connection.request(conn, :health, %{}, timeout: t)
    end

    assert {:ok, %{status: _}} = PromptEngine.Connection.request(conn, :health, %{}, timeout: 30_000)
    assert {:error, %Error{reason: :bad_option}} = PromptEngine.start_link(name: BadTimeout, timeout: 2 ** 40)
    assert {:error, %Error{reason: :bad_option}} = PromptEngine.start_link(name: BadTimeout, ready_timeout: 2 ** 40)
  end

  test "an atom is never read as an instance: experiment names are strings", %{name: name} do
    assert {:error, %Error{reason: :bad_request, message: msg}} = PromptEngine.choose_prompt(:triage, "Classify.")
    assert msg =~ "experiment: expected the experiment's name (a string), got the atom :triage" and msg =~ "name: option"
    assert {:error, %Error{reason: :bad_request}} = PromptEngine.choose_prompt(name, "triage", "Classify.", %{})

    assert {:error, %Error{reason: :bad_request, message: "experiment: name: expected the experiment's name" <> _}} =
             PromptEngine.experiment(:triage, name: name)

    assert {:error, %Error{reason: :bad_request}} = PromptEngine.experiment(:triage, name: name, action: :pin, prompt_id: "p")
    assert {:error, %Error{reason: :bad_request}} = PromptEngine.subscribe(name)
    assert {:ok, %{experiments: _}} = PromptEngine.experiment(nil, name: name)
  end

  test "metadata values are sent as given: strings, numbers and booleans", %{name: name} do
    meta = %{"s" => "text", "i" => 42, "f" => 0.5, "b" => true}
    # echo returns what the sidecar received
    assert {:ok, %{metadata: ^meta}} = PromptEngine.echo(%{metadata: meta}, name: name)
    assert PromptEngine.Args.encode(%{metadata: meta}) == %{metadata: meta}
  end
end
