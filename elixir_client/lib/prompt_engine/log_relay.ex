defmodule PromptEngine.LogRelay do
  @moduledoc """
  Owns the reading end of one sidecar's stderr and hands each line to Logger.

  `PromptEngine.Connection` starts the sidecar with its stderr redirected
  into a FIFO (see the Connection's moduledoc for why not the Port itself);
  this process reads that FIFO through `cat` (an Erlang Port in line mode)
  so that the Connection's mailbox only ever holds frames.

  Lines are pino JSON: `level` is mapped (10 trace and 20 debug → `:debug`,
  30 → `:info`, 40 → `:warning`, 50 error and 60 fatal → `:error`), `msg`
  becomes the message and every other field becomes Logger metadata
  (`pid` as `:os_pid`; `time`, `hostname`, `name` dropped; fields whose names
  Logger reserves are prefixed `sidecar_`), plus `:instance` and
  `prompt_engine: true`. A line that is not a pino object is logged as it
  is: at `:info` when it is a progress line of the sidecar's own tools
  (`[train] epoch 3: ...`: a lower-case tag in brackets), else (a Node crash
  trace, build output of a first run) at `:warning`.

  No secret reaches Logger: every line is redacted before it is parsed
  (`PromptEngine.Redact.text/2`): passwords in URLs, and the exact secrets of
  this sidecar's environment (its database password, `LLM_API_KEY`, the
  dashboard token), handed over sealed by the Connection.

  The relay is not linked to the Connection: when the sidecar dies its last
  lines (often the reason it died) are still read and logged; `cat` sees
  EOF when the sidecar's stderr closes and the relay then exits. If the
  Connection is gone and EOF never comes (a grandchild keeps stderr open),
  `cat` is killed after a grace period. The FIFO's name is removed as soon as
  both ends are open (by the shell that starts `cat`), and by the relay when
  it ends, whichever comes first.
  """
  require Logger

  @line_bytes 16_384
  @max_line 1_048_576
  @grace_ms 10_000
  @reserved ~w(pid time gl mfa file line module function domain application report_cb crash_reason initial_call registered_name error_logger logger_formatter)a

  @doc false
  # Start cat on `fifo` from a fresh process watching the caller; {:ok, pid} once cat runs.
  @spec start(String.t(), keyword()) :: {:ok, pid()} | {:error, term()}
  def start(fifo, meta) do
    owner = self()
    ref = make_ref()

    pid =
      spawn(fn ->
        case open(fifo) do
          {:ok, port} ->
            send(owner, {ref, :ok})
            mref = Process.monitor(owner)
            loop(%{port: port, fifo: fifo, meta: meta, owner: mref, acc: "", secrets: PromptEngine.Redact.seal(Keyword.get(meta, :secrets, []))})

          error ->
            send(owner, {ref, error})
        end
      end)

    receive do
      {^ref, :ok} -> {:ok, pid}
      {^ref, error} -> error
    after
      5_000 -> {:error, :timeout}
    end
  end

  @doc false
  @spec stop(pid()) :: :ok
  def stop(pid) do
    send(pid, :give_up)
    :ok
  end

  @doc false
  # The sidecar is gone: stop reading after the grace period if its EOF has not come by then.
  @spec stop_after(pid()) :: :ok
  def stop_after(pid) do
    Process.send_after(pid, :give_up, @grace_ms)
    :ok
  end

  defp open(fifo) do
    case {System.find_executable("sh"), System.find_executable("cat")} do
      {sh, cat} when is_binary(sh) and is_binary(cat) ->
        # Opening the FIFO for reading returns once the sidecar's side has it open: from then on
        # its name is not needed and is removed, so nothing is left in tmp even if the VM dies.
        # cat's own complaints (a broken pipe when the VM exits first) must not reach the VM's stderr.
        script = ~s(exec 0<"$0" 2>/dev/null; rm -f "$0"; exec "$1")
        {:ok, Port.open({:spawn_executable, sh}, [:binary, {:line, @line_bytes}, :exit_status, args: ["-c", script, fifo, cat]])}

      _ ->
        {:error, :no_cat}
    end
  rescue
    e -> {:error, e}
  end

  defp loop(%{port: port} = s) do
    receive do
      {^port, {:data, {:eol, chunk}}} ->
        line = s.acc <> chunk
        safe_log(line, s)
        loop(%{s | acc: ""})

      {^port, {:data, {:noeol, chunk}}} ->
        acc = s.acc <> chunk
        # a runaway line is logged in pieces rather than held without bound
        if byte_size(acc) >= @max_line,
          do:
            (
              safe_log(acc, s)
              loop(%{s | acc: ""})
            ),
          else: loop(%{s | acc: acc})

      {^port, {:exit_status, _}} ->
        if s.acc != "", do: safe_log(s.acc, s)
        File.rm(s.fifo)

      {:DOWN, ref, :process, _, _} when ref == s.owner ->
        Process.send_after(self(), :give_up, @grace_ms)
        loop(s)

      :give_up ->
        case Port.info(port, :os_pid) do
          {:os_pid, os_pid} -> PromptEngine.Sidecar.signal(os_pid, "-TERM")
          nil -> :ok
        end

        File.rm(s.fifo)
    end
  end

  defp safe_log(line, s) do
    line = PromptEngine.Redact.text(line, PromptEngine.Redact.unseal(s.secrets))
    {level, message, metadata} = parse(line)
    Logger.bare_log(level, message, metadata ++ [instance: s.meta[:instance], prompt_engine: true])
  rescue
    _ -> Logger.bare_log(:warning, "prompt-engine: a sidecar log line could not be relayed", instance: s.meta[:instance], prompt_engine: true)
  end

  @doc """
  Turn one stderr line into `{level, message, metadata}`.

      iex> PromptEngine.LogRelay.parse(~s({"level":40,"time":1,"pid":7,"msg":"NATS error","op":"train"}))
      {:warning, "NATS error", [os_pid: 7, op: "train"]}
      iex> PromptEngine.LogRelay.parse("node:internal/modules/cjs/loader:1228")
      {:warning, "node:internal/modules/cjs/loader:1228", []}
      iex> PromptEngine.LogRelay.parse("[train] epoch 3: train loss 0.5012, validation loss 0.5120")
      {:info, "[train] epoch 3: train loss 0.5012, validation loss 0.5120", []}
  """
  @spec parse(String.t()) :: {Logger.level(), String.t(), keyword()}
  def parse(line) do
    case decode_json(String.trim_trailing(line)) do
      {:ok, %{"level" => level} = fields} when is_integer(level) ->
        message = fields |> Map.get("msg", "") |> to_text()
        metadata = fields |> Map.drop(["level", "msg", "time", "hostname", "name"]) |> Enum.sort() |> Enum.flat_map(&meta/1)
        {level(level), message, metadata}

      _ ->
        if Regex.match?(~r/\A\[[a-z][a-z0-9_-]*\] /, line), do: {:info, line, []}, else: {:warning, line, []}
    end
  end

  defp level(l) when l <= 20, do: :debug
  defp level(l) when l <= 30, do: :info
  defp level(l) when l <= 40, do: :warning
  defp level(_), do: :error

  defp to_text(s) when is_binary(s), do: s
  defp to_text(other), do: inspect(other)

  # Field names come from the sidecar's own code (a bounded set), so making atoms of them is safe;
  # anything that does not look like an identifier is skipped rather than turned into an atom.
  defp meta({"pid", v}), do: [os_pid: v]

  defp meta({k, v}) do
    if Regex.match?(~r/\A[a-z_][a-zA-Z0-9_]{0,63}\z/, k) do
      key = String.to_atom(k)
      if key in @reserved, do: [{String.to_atom("sidecar_" <> k), v}], else: [{key, v}]
    else
      []
    end
  end

  # -- a small JSON decoder (no Hex dependencies; OTP 25 has no :json) ----------

  @doc false
  @spec decode_json(String.t()) :: {:ok, term()} | :error
  def decode_json(text) do
    case value(skip_ws(text)) do
      {v, rest} -> if skip_ws(rest) == "", do: {:ok, v}, else: :error
    end
  catch
    :json -> :error
  end

  defp skip_ws(<<c, rest::binary>>) when c in ~c[ \t\r\n], do: skip_ws(rest)
  defp skip_ws(s), do: s

  defp value("{" <> rest), do: object(skip_ws(rest), %{})
  defp value("[" <> rest), do: array(skip_ws(rest), [])
  defp value("\"" <> rest), do: string(rest, [])
  defp value("true" <> rest), do: {true, rest}
  defp value("false" <> rest), do: {false, rest}
  defp value("null" <> rest), do: {nil, rest}
  defp value(<<c, _::binary>> = s) when c == ?- or c in ?0..?9, do: number(s)
  defp value(_), do: throw(:json)

  defp object("}" <> rest, acc), do: {acc, rest}

  defp object("\"" <> rest, acc) do
    {key, rest} = string(rest, [])

    case skip_ws(rest) do
      ":" <> rest ->
        {v, rest} = value(skip_ws(rest))
        acc = Map.put(acc, key, v)

        case skip_ws(rest) do
          "," <> rest -> object(skip_ws(rest), acc)
          "}" <> rest -> {acc, rest}
          _ -> throw(:json)
        end

      _ ->
        throw(:json)
    end
  end

  defp object(_, _), do: throw(:json)

  defp array("]" <> rest, []), do: {[], rest}

  defp array(s, acc) do
    {v, rest} = value(s)

    case skip_ws(rest) do
      "," <> rest -> array(skip_ws(rest), [v | acc])
      "]" <> rest -> {Enum.reverse([v | acc]), rest}
      _ -> throw(:json)
    end
  end

  defp string("\"" <> rest, acc), do: {IO.iodata_to_binary(Enum.reverse(acc)), rest}

  defp string("\\u" <> <<h::binary-size(4), rest::binary>>, acc) do
    code = hex(h)

    if code in 0xD800..0xDBFF do
      case rest do
        "\\u" <> <<l::binary-size(4), rest2::binary>> ->
          low = hex(l)
          string(rest2, [<<0x10000 + (code - 0xD800) * 0x400 + (low - 0xDC00)::utf8>> | acc])

        _ ->
          string(rest, ["\uFFFD" | acc])
      end
    else
      string(rest, [<<code::utf8>> | acc])
    end
  rescue
    ArgumentError -> string(rest, ["\uFFFD" | acc])
  end

  defp string("\\" <> <<c, rest::binary>>, acc) do
    char =
      case c do
        ?" -> "\""
        ?\\ -> "\\"
        ?/ -> "/"
        ?b -> "\b"
        ?f -> "\f"
        ?n -> "\n"
        ?r -> "\r"
        ?t -> "\t"
        _ -> throw(:json)
      end

    string(rest, [char | acc])
  end

  defp string(s, acc) do
    case :binary.match(s, ["\"", "\\"]) do
      {0, _} -> throw(:json)
      {i, _} -> string(binary_part(s, i, byte_size(s) - i), [binary_part(s, 0, i) | acc])
      :nomatch -> throw(:json)
    end
  end

  defp hex(h) do
    case Integer.parse(h, 16) do
      {n, ""} -> n
      _ -> throw(:json)
    end
  end

  defp number(s) do
    [num] = Regex.run(~r/\A-?\d+(\.\d+)?([eE][+-]?\d+)?/, s, capture: :first) || throw(:json)
    rest = binary_part(s, byte_size(num), byte_size(s) - byte_size(num))

    v =
      if String.contains?(num, [".", "e", "E"]) do
        {f, ""} = Float.parse(if String.contains?(num, "."), do: num, else: String.replace(num, ~r/[eE]/, ".0e"))
        f
      else
        String.to_integer(num)
      end

    {v, rest}
  end
end
