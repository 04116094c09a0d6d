defmodule PromptEngine.DocsTest do
  use ExUnit.Case, async: true

  # Every public function of the client is documented with an example and has a @spec.
  @modules [PromptEngine, PromptEngine.Error, PromptEngine.Supervisor, PromptEngine.Connection, PromptEngine.LogRelay, PromptEngine.Telemetry, PromptEngine.Redact, PromptEngine.Sidecar]

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
end
