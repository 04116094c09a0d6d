defmodule PromptEngine.DocsTest do
  use ExUnit.Case, async: true

  # Every public function of the client is documented with an example and has a @spec.
  @modules [
    PromptEngine,
    PromptEngine.Error,
    PromptEngine.Supervisor,
    PromptEngine.Connection,
    PromptEngine.LogRelay,
    PromptEngine.Telemetry,
    PromptEngine.Redact,
    PromptEngine.Sidecar
  ]

  test "the client's sources are laid out as `mix format` writes them (.formatter.exs)" do
    {out, status} = System.cmd("mix", ["format", "--check-formatted"], cd: Path.expand("..", __DIR__), stderr_to_stdout: true)
    assert status == 0, "run `mix format` in elixir_client:\n" <> out
  end

  test "every documented public function has an example and a @spec" do
    for mod <- @modules do
      {:docs_v1, _, :elixir, _, moduledoc, _, docs} = Code.fetch_docs(mod)
      assert %{"en" => _} = moduledoc, "#{inspect(mod)} has no moduledoc"
      {:ok, specs} = Code.Typespec.fetch_specs(mod)
      specced = MapSet.new(specs, fn {fa, _} -> fa end)

      for {{:function, fun, arity}, _, _, doc, _} <- docs, doc != :hidden, not String.starts_with?(Atom.to_string(fun), "__") do
        assert %{"en" => text} = doc, "#{inspect(mod)}.#{fun}/#{arity} has no @doc"
        assert text =~ ~r/^    \S/m, "#{inspect(mod)}.#{fun}/#{arity}: its @doc has no example"
        # a function with defaults has its spec on the highest arity
        assert Enum.any?(arity..(arity + 3), &MapSet.member?(specced, {fun, &1})), "#{inspect(mod)}.#{fun}/#{arity} has no @spec"
      end
    end
  end

  test "every public op function is documented (none hidden by accident)" do
    {:docs_v1, _, _, _, _, _, docs} = Code.fetch_docs(PromptEngine)
    hidden = for {{:function, f, a}, _, _, :hidden, _} <- docs, do: {f, a}
    assert hidden == []
  end

  test "the function arities the READMEs and docs/deploying.md name exist (the two READMEs agree)" do
    Code.ensure_loaded!(PromptEngine)
    names = PromptEngine.__info__(:functions) |> Keyword.keys() |> MapSet.new(&Atom.to_string/1)

    for page <- ["README.md", "elixir_client/README.md", "docs/deploying.md"], text = File.read!(Path.expand("../../" <> page, __DIR__)) do
      mentioned =
        for [_, f, a] <- Regex.scan(~r/`(?:PromptEngine\.)?([a-z_]+!?)\/(\d)`/, text), MapSet.member?(names, f), do: {String.to_atom(f), String.to_integer(a)}

      assert mentioned != [] or page == "docs/deploying.md"
      for {f, a} <- mentioned, do: assert(function_exported?(PromptEngine, f, a), "#{page} names PromptEngine.#{f}/#{a}, which does not exist")
    end
  end
end
