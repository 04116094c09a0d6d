defmodule PromptEngine.Term do
  # Owns decoding a frame that `:erlang.binary_to_term(bin, [:safe])` refused because it
  # holds an atom this VM does not know (a sidecar newer than the client's generated
  # PromptEngine.Atoms, or drift the atoms test has not caught yet). Such an atom is
  # decoded as a string instead of being created, so the caller still gets its reply and
  # the atom table cannot grow; containers are walked here, every other term is handed to
  # binary_to_term([:safe, :used]). Frames are otherwise decoded by binary_to_term alone.
  @moduledoc false

  @doc false
  # {:ok, term, names of the atoms decoded as strings} or :error.
  @spec decode(binary()) :: {:ok, term(), [String.t()]} | :error
  def decode(<<131, 80, _size::32, z::binary>>) do
    decode(<<131>> <> :zlib.uncompress(z))
  rescue
    _ -> :error
  end

  def decode(<<131, rest::binary>>) do
    case term(rest, []) do
      {term, "", unknown} -> {:ok, term, Enum.uniq(unknown)}
      _ -> :error
    end
  catch
    :error, _ -> :error
  end

  def decode(_), do: :error

  # ATOM_UTF8, SMALL_ATOM_UTF8, ATOM (latin-1), SMALL_ATOM (latin-1)
  defp term(<<118, n::16, name::binary-size(n), rest::binary>>, u), do: atom(name, rest, u)
  defp term(<<119, n::8, name::binary-size(n), rest::binary>>, u), do: atom(name, rest, u)
  defp term(<<100, n::16, name::binary-size(n), rest::binary>>, u), do: atom(:unicode.characters_to_binary(name, :latin1), rest, u)
  defp term(<<115, n::8, name::binary-size(n), rest::binary>>, u), do: atom(:unicode.characters_to_binary(name, :latin1), rest, u)

  # SMALL_TUPLE, LARGE_TUPLE
  defp term(<<104, arity::8, rest::binary>>, u), do: tuple(arity, rest, u)
  defp term(<<105, arity::32, rest::binary>>, u), do: tuple(arity, rest, u)

  # LIST (with its tail), MAP
  defp term(<<108, n::32, rest::binary>>, u) do
    {items, rest, u} = many(n, rest, u, [])
    {tail, rest, u} = term(rest, u)
    {items ++ tail, rest, u}
  end

  defp term(<<116, n::32, rest::binary>>, u) do
    {kvs, rest, u} = many(2 * n, rest, u, [])
    {kvs |> Enum.chunk_every(2) |> Map.new(fn [k, v] -> {k, v} end), rest, u}
  end

  # Anything else (numbers, binaries, strings, pids, ...) holds no atom of its own.
  defp term(other, u) do
    {t, used} = :erlang.binary_to_term(<<131, other::binary>>, [:safe, :used])
    {t, binary_part(other, used - 1, byte_size(other) - used + 1), u}
  end

  defp atom(name, rest, u) do
    {String.to_existing_atom(name), rest, u}
  rescue
    ArgumentError -> {name, rest, [name | u]}
  end

  defp tuple(arity, rest, u) do
    {items, rest, u} = many(arity, rest, u, [])
    {List.to_tuple(items), rest, u}
  end

  defp many(0, rest, u, acc), do: {Enum.reverse(acc), rest, u}

  defp many(n, rest, u, acc) do
    {t, rest, u} = term(rest, u)
    many(n - 1, rest, u, [t | acc])
  end
end
