defmodule PromptEngine.Bang do
  # Owns the bang variants of PromptEngine's functions: the one place they come from.
  # `@before_compile PromptEngine.Bang` defines `f!` for every public `f` whose @spec returns
  # `error()` (except those in @without_bang), in every arity `f` has, with a @doc and a @spec
  # derived from f's own: `{:ok, value}` becomes `value`, `:ok` stays `:ok`, an error is
  # raised (inside the telemetry span, so it is a `:exception` event).
  @moduledoc false

  @without_bang [:start_link]

  defmacro __before_compile__(env) do
    specs =
      for {:spec, {:"::", _, [{name, _, args}, ret]}, _} <- Module.get_attribute(env.module, :spec), is_list(args), into: %{} do
        {{name, length(args)}, {args, ret}}
      end

    defs = Module.definitions_in(env.module, :def)

    for {{name, full}, {arg_types, ret}} <- specs,
        name not in @without_bang,
        not String.ends_with?(Atom.to_string(name), "!"),
        returns_error?(ret),
        arity <- Enum.sort(for({^name, a} <- defs, do: a)),
        arity <= full do
      bang = :"#{name}!"
      {:v1, :def, _, [{_, vars, _, _} | _]} = Module.get_definition(env.module, {name, full})
      vars = vars |> Enum.take(arity) |> Enum.with_index(1) |> Enum.map(&var/1)
      types = Enum.take(arg_types, arity)
      value = value_type(ret)
      example = "    #{inspect(env.module)}.#{bang}(#{Enum.map_join(vars, ", ", &Macro.to_string/1)})"

      doc = """
      Like `#{name}/#{arity}`, but returns the result (the value of `{:ok, value}`, or `:ok`)
      and raises the `PromptEngine.Error` instead of returning `{:error, error}`.

      #{example}
      """

      quote do
        @doc unquote(doc)
        @spec unquote(bang)(unquote_splicing(types)) :: unquote(value)
        def unquote(bang)(unquote_splicing(vars)), do: PromptEngine.Telemetry.bang(fn -> unquote(name)(unquote_splicing(vars)) end)
      end
    end
  end

  # The function's own argument name where its head has a plain variable, else argN.
  defp var({{v, _, ctx}, _i}) when is_atom(v) and is_atom(ctx), do: Macro.var(v |> Atom.to_string() |> String.trim_leading("_") |> String.to_atom(), nil)
  defp var({_pattern, i}), do: Macro.var(:"arg#{i}", nil)

  defp union({:|, _, [a, b]}), do: union(a) ++ union(b)
  defp union(t), do: [t]

  defp returns_error?(ret), do: Enum.any?(union(ret), &match?({:error, _, []}, &1)) or Enum.any?(union(ret), &match?({:result, _, []}, &1))

  # result() -> map(); {:ok, t} -> t; :ok -> :ok; error() dropped
  defp value_type(ret) do
    ret
    |> union()
    |> Enum.flat_map(fn
      {:error, _, []} -> []
      {:result, _, []} -> [quote(do: map())]
      {:ok, t} -> [t]
      other -> [other]
    end)
    |> Enum.uniq()
    |> Enum.reduce(fn t, acc -> quote(do: unquote(acc) | unquote(t)) end)
  end
end
