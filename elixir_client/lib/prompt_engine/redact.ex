defmodule PromptEngine.Redact do
  @moduledoc """
  Keeps secrets out of everything that can be printed: crash reports,
  `:sys.get_state/1`, supervisor reports, Logger lines and metadata, error
  messages.

  A secret is a database URL (its password), the sidecar's environment
  (`DATABASE_URL`, `LLM_API_KEY`, `NATS_URL`, ...), and the dashboard token.
  The client never keeps one as plain data in a process state or a child
  spec: it is *sealed* in a zero-arity function, which every printer shows
  as `#Function<...>`, and unsealed only where it is used (the environment
  handed to `Port.open/2`). Where a readable view helps (`format_status/1`
  of a connection, `PromptEngine.Connection.info/1`), values are shown
  redacted: `postgres://app:***@db/app`, and `***` for variables whose
  name says they are secret (`*_TOKEN`, `*_KEY`, `*PASSWORD*`, `*SECRET*`,
  `*SEED*`: `NATS_NKEY_SEED`), and a password, token or API key given in a
  URL's query string (`?password=...`).

      iex> PromptEngine.Redact.text("connecting to postgres://app:hunter2@db:5432/app")
      "connecting to postgres://app:***@db:5432/app"
  """

  @secret_name ~r/(PASSWORD|SECRET|TOKEN|API_KEY|_KEY$|CREDENTIALS|SEED|NKEY)/i
  # A secret in a URL's query string (`?password=...`, `&sslpassword=`, `?api-key=`, `&token=`):
  # libpq and node-postgres take a password there too.
  @query_secret ~r{([?&;][a-z_\-]*(?:password|passwd|pwd|secret|token|api[-_]?key|apikey)=)([^&;\s#"']+)}i
  # A URL's user information: everything between `//` and the last `@` before
  # the host ends (a password may hold `@`: URL parsers take the last one).
  @url_userinfo ~r{([a-z][a-z0-9+.\-]*://)([^\s/?#]*)@}i
  # Schemes whose user part alone is a secret (a NATS token: `nats://token@host`).
  @token_schemes ~w(nats tls ws wss)

  @doc """
  Seal a value: a zero-arity function returning it (a function is sealed already).

      iex> sealed = PromptEngine.Redact.seal("postgres://app:pw@db/app")
      iex> inspect(sealed) =~ "pw"
      false
  """
  @spec seal(term()) :: (() -> term())
  def seal(f) when is_function(f, 0), do: f
  def seal(value), do: fn -> value end

  @doc """
  The sealed value (a value that is not sealed is returned as it is).

      iex> PromptEngine.Redact.seal("x") |> PromptEngine.Redact.unseal()
      "x"
  """
  @spec unseal(term()) :: term()
  def unseal(f) when is_function(f, 0), do: f.()
  def unseal(value), do: value

  @doc """
  `text` with passwords (and NATS tokens) in URLs masked and every string of
  `secrets` (at least 4 bytes long) replaced by `***`.

      iex> PromptEngine.Redact.text("key sk-12345 at nats://u:p4ss@n:4222", ["sk-12345"])
      "key *** at nats://u:***@n:4222"

      iex> PromptEngine.Redact.text("nats://s3cr3tTok@nats:4222 and postgres://app:p@ssw0rd@db/app")
      "nats://***@nats:4222 and postgres://app:***@db/app"

      iex> PromptEngine.Redact.text("postgres://app@db/app?sslmode=require&password=hunter2 and https://llm/v1?api-key=sk-9")
      "postgres://app@db/app?sslmode=require&password=*** and https://llm/v1?api-key=***"
  """
  @spec text(String.t(), [String.t()]) :: String.t()
  def text(text, secrets \\ []) when is_binary(text) do
    masked =
      Regex.replace(@url_userinfo, text, fn whole, scheme, userinfo ->
        case userinfo_secret(scheme, userinfo) do
          nil -> whole
          {_secret, masked} -> scheme <> masked <> "@"
        end
      end)

    masked = Regex.replace(@query_secret, masked, "\\1***")

    Enum.reduce(secrets, masked, fn
      s, acc when is_binary(s) and byte_size(s) >= 4 -> String.replace(acc, s, "***")
      _, acc -> acc
    end)
  end

  @doc """
  An environment (`[{name, value}]`, charlists or strings) with secrets
  redacted, for display.

      iex> PromptEngine.Redact.env([{~c"DATABASE_URL", ~c"postgres://a:b1@h/d"}, {"LLM_API_KEY", "sk-1"}, {"LOG_LEVEL", "warn"}])
      [{"DATABASE_URL", "postgres://a:***@h/d"}, {"LLM_API_KEY", "***"}, {"LOG_LEVEL", "warn"}]
  """
  @spec env([{charlist() | String.t(), charlist() | String.t() | false | nil}]) :: [{String.t(), String.t() | false | nil}]
  def env(pairs) do
    for {k, v} <- pairs do
      name = to_string(k)

      value =
        cond do
          v in [nil, false] -> v
          secret_name?(name) and to_string(v) != "" -> "***"
          true -> text(to_string(v))
        end

      {name, value}
    end
  end

  @doc """
  The secret strings of an environment: passwords found in URLs, and the
  values of variables whose name says they are secret. What
  `PromptEngine.LogRelay` masks in the sidecar's log lines.

      iex> PromptEngine.Redact.secrets([{"DATABASE_URL", "postgres://a:b1cd@h/d"}, {"LLM_API_KEY", "sk-123"}])
      ["b1cd", "sk-123"]

      iex> PromptEngine.Redact.secrets([{"NATS_URL", "nats://s3cr3tTok@nats:4222"}, {"DATABASE_URL", "postgres://app:p@ssw0rd@db/app"}])
      ["s3cr3tTok", "p@ssw0rd"]

      iex> PromptEngine.Redact.secrets([{"DATABASE_URL", "postgres://app@db/app?password=hunter2"}, {"NATS_NKEY_SEED", "SUAexampleseed"}])
      ["hunter2", "SUAexampleseed"]
  """
  @spec secrets([{charlist() | String.t(), charlist() | String.t() | false | nil}]) :: [String.t()]
  def secrets(pairs) do
    pairs
    |> Enum.flat_map(fn
      {_k, v} when v in [nil, false] ->
        []

      {k, v} ->
        v = to_string(v)
        passwords = for [_, scheme, userinfo] <- Regex.scan(@url_userinfo, v), {pw, _masked} <- [userinfo_secret(scheme, userinfo)], do: pw
        passwords = passwords ++ for([_, _key, value] <- Regex.scan(@query_secret, v), do: value)
        if secret_name?(to_string(k)) and v != "", do: [v | passwords], else: passwords
    end)
    |> Enum.uniq()
  end

  @doc """
  Whether an environment variable's name says it holds a secret.

      iex> PromptEngine.Redact.secret_name?("PROMPT_ENGINE_DASHBOARD_TOKEN")
      true
  """
  @spec secret_name?(String.t()) :: boolean()
  def secret_name?(name), do: Regex.match?(@secret_name, name)

  # The secret of a URL's user information (the password, or for a NATS URL a token alone) and
  # the user information with it masked; nil when it holds none.
  defp userinfo_secret(scheme, userinfo) do
    case String.split(userinfo, ":", parts: 2) do
      [_user, ""] -> nil
      [user, password] -> {password, user <> ":***"}
      [""] -> nil
      [token] -> if String.downcase(String.trim_trailing(scheme, "://")) in @token_schemes, do: {token, "***"}, else: nil
    end
  end
end
