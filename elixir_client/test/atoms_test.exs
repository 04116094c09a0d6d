defmodule PromptEngine.AtomsTest do
  # PromptEngine.Atoms is generated from the sidecar's op table (npm run docs:ops); this
  # fails when the committed file differs from what the generator writes now, and when a
  # real sidecar sends an atom the file does not list.
  use ExUnit.Case, async: false

  alias PromptEngine.{Connection, TestHelper}

  @root Path.expand("../..", __DIR__)

  test "atoms.ex is what scripts/elixir-atoms.mjs generates from the op table" do
    {generated, 0} = System.cmd("node", [Path.join(@root, "scripts/elixir-atoms.mjs"), "--print"], cd: @root, stderr_to_stdout: true)
    committed = File.read!(Path.join(@root, "elixir_client/lib/prompt_engine/atoms.ex"))
    assert committed == generated, "elixir_client/lib/prompt_engine/atoms.ex is stale: run `npm run docs:ops`"
  end

  test "every op's example, health, stats and describe, through a real sidecar: no atom the client does not know" do
    name = TestHelper.unique_name(__MODULE__)

    start_supervised!(
      {PromptEngine, name: name, data_dir: TestHelper.tmp_dir("pe-atoms"), database_url: TestHelper.pg_url!(), env: [{"LOG_LEVEL", "warn"}, {"LLM_URL", ""}]}
    )

    [conn] = PromptEngine.Supervisor.connections(name)
    {:ok, %{ops: ops}} = Connection.request(conn, :describe, %{}, timeout: 30_000)
    assert length(ops) == length(PromptEngine.Atoms.ops())

    # a closed-loop experiment with variants, so that experiment's reply carries its states
    exp = "atoms_#{System.unique_integer([:positive])}"
    for _ <- 1..40, do: PromptEngine.choose_prompt(exp, "Classify {x}.", %{model: "m"}, name: name) |> elem(1) |> PromptEngine.report_outcome(true, name: name)

    calls =
      for %{name: op, examples: examples} <- ops, op not in ["train"], example <- [%{} | examples] do
        {String.to_existing_atom(op), example}
      end ++ [{:experiment, %{experiment: exp}}, {:experiment, %{}}, {:stats, %{}}, {:health, %{}}]

    for {op, args} <- calls, do: Connection.request(conn, op, args, timeout: 60_000)
    %{unknown_atoms: unknown} = Connection.info(conn)
    assert unknown == 0, "the sidecar sent #{unknown} atoms PromptEngine.Atoms does not list (see the warning logged)"
  end

  test "an atom the client does not know arrives as a string; none is created" do
    name = "pe_never_an_atom_#{System.unique_integer([:positive])}"
    frame = <<131, 104, 3, 119, 5, "reply", 97, 1, 104, 2, 119, 2, "ok", 116, 0, 0, 0, 1, 119, byte_size(name), name::binary, 109, 0, 0, 0, 1, "v">>
    assert_raise ArgumentError, fn -> :erlang.binary_to_term(frame, [:safe]) end
    assert {:ok, {:reply, 1, {:ok, %{^name => "v"}}}, [^name]} = PromptEngine.Term.decode(frame)
    assert_raise ArgumentError, fn -> String.to_existing_atom(name) end
    # and terms without unknown atoms decode as binary_to_term does
    term = {:reply, 7, {:ok, %{a: [1, 2.5, "x", {:t, nil}], b: -5, c: 12_345_678_901_234_567_890}}}
    assert {:ok, ^term, []} = PromptEngine.Term.decode(:erlang.term_to_binary(term))
    assert {:ok, ^term, []} = PromptEngine.Term.decode(:erlang.term_to_binary(term, [:compressed]))
  end
end
