defmodule PromptEngine.TemplatesTest do
  use ExUnit.Case, async: false

  @repo Path.expand("../..", __DIR__)

  setup do
    nats = System.get_env("TEST_NATS_URL") || flunk("TEST_NATS_URL is not set: run through `npm test`")
    name = Module.concat(__MODULE__, "I#{System.unique_integer([:positive])}")

    start_supervised!(
      {PromptEngine,
       name: name,
       database_url: PromptEngine.TestHelper.pg_url!(),
       data_dir: PromptEngine.TestHelper.tmp_dir("pe-ex-tpl"),
       env: [{"LOG_LEVEL", "warn"}, {"NATS_URL", nats}]}
    )

    {:ok, name: name, nats: nats}
  end

  test "generate_prompt, get_sparc_prompt and render_template end to end", %{name: name} do
    assert {:ok, %{prompt: p, confidence: c, template_used: "system_plan_mode", optimization_score: s}} =
             PromptEngine.generate_prompt("migrate the ledger", "elixir", name: name, template_id: "system_plan_mode")

    assert p =~ "PLAN MODE" and p =~ "migrate the ledger"
    assert is_float(c) and is_float(s)

    vars = %{"language" => "elixir", "framework" => "phoenix", "domain" => "billing", "context" => "invoices"}
    assert {:ok, %{prompt: spec, template_used: "sparc_specification"}} = PromptEngine.get_sparc_prompt("specification", vars, name: name)
    assert spec =~ "SPECIFICATION phase" and spec =~ "phoenix"

    assert {:error, %PromptEngine.Error{reason: :bad_request, message: "variables: missing " <> missing}} =
             PromptEngine.render_template("service_blueprint", %{"language" => "go"}, name: name, strict: true)

    assert missing =~ "service_name"
    assert {:ok, %{templates: [_ | _]}} = PromptEngine.list_templates(name: name)
  end

  test "a central_cloud update broadcast reaches subscribers as an event", %{name: name, nats: nats} do
    :ok = PromptEngine.subscribe(name: name)
    # make sure the sidecar's templates part (and its NATS subscription) is up
    {:ok, _} = PromptEngine.get_template("sparc_completion", name: name)
    wait_connected(name, 50)

    publish = """
    import('nats').then(async ({ connect, JSONCodec }) => {
      const nc = await connect({ servers: process.argv[1] });
      nc.publish('template.updated.command.ex_rules', JSONCodec().encode({ template_name: 'ex_rules', template_type: 'command', language: 'any', template_content: 'v2 {{context}}' }));
      await nc.drain();
    });
    """

    {_, 0} = System.cmd("node", ["--input-type=module", "-e", publish, nats], cd: @repo)
    assert_receive {:prompt_engine_event, :template_updated, %{template_name: "ex_rules", template_type: "command"}}, 5_000
    assert {:ok, %{prompt: "v2 go"}} = PromptEngine.render_template("ex_rules", %{"context" => "go"}, name: name)
  end

  defp wait_connected(_name, 0), do: flunk("the sidecar did not connect to NATS")

  defp wait_connected(name, n) do
    {:ok, %{services: %{"templates" => t}}} = PromptEngine.stats(name: name)

    if t.central_connected,
      do: :ok,
      else:
        (
          Process.sleep(50)
          wait_connected(name, n - 1)
        )
  end
end
