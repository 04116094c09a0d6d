defmodule PromptEngine.Sidecar do
  @min_node_major 20

  @moduledoc """
  How a sidecar process is started: which executable, which Node, which
  arguments and environment. Resolved at run time, each time a connection
  starts, from the start options over the application environment over the
  defaults, so `config/runtime.exs` and a moved `mix release` both work.

  | start option | app env (`config :prompt_engine, ...`) | default |
  |---|---|---|
  | `:executable` | `:executable` | `priv/sidecar/dist/port/main.js` of the `:prompt_engine` app |
  | `:node` | `:node` | `node` on the `PATH` |
  | `:data_dir` | `:data_dir` (a root: each instance gets `<root>/<instance>`) | `<root>/<instance>`, root below |
  | `:database_url` | `:database_url` | unset: the sidecar inherits the VM's `DATABASE_URL`, else PGlite |
  | `:schema` | `:schema` | unset: the sidecar's own default schema, `prompt_engine` (`PROMPT_ENGINE_DB_SCHEMA`) |
  | `:dashboard` | | off; `[port: p, host: h, token: t]`: sidecar 1 serves the dashboard (`PROMPT_ENGINE_DASHBOARD=h:p`, `PROMPT_ENGINE_DASHBOARD_TOKEN=t`) |
  | `:args` | | `["--port-fds"]` |
  | `:env` | | `[]`, applied last (overrides what the options above set) |

  The executable is either a `.js` file, run as `node <file> <args>`, or any
  executable file, spawned directly with `NODE` set to the Node binary (what
  the repository's `port/prompt_engine` launcher reads). `priv/sidecar/` is
  built by `mix compile` (the `:prompt_engine_sidecar` compiler) or
  `mix prompt_engine.sidecar`; see `docs/deploying.md`.

  Node must be version #{@min_node_major} or newer; it is checked when a connection starts.
  Pass `node: false` to skip the check (an executable that brings its own
  runtime).

  Each sidecar of a pool gets its own data directory, `<data_dir>/<i>`
  (PGlite and the outage journal are single-process). The default root is
  `prompt_engine_data/` in the app's build path (`_build/<env>/`) under Mix,
  `$RELEASE_ROOT/prompt_engine_data/` in a release, else the system temp
  directory — never inside the dependency.
  """

  @entry "sidecar/dist/port/main.js"

  @typedoc "What `PromptEngine.Connection` passes to `Port.open({:spawn_executable, executable}, args: args, env: env)`."
  @type spec :: %{executable: String.t(), args: [String.t()], env: [{charlist(), charlist() | false}], data_dir: String.t(), node: String.t() | nil}

  @doc """
  Resolve the spawn spec for one sidecar from its start options (secrets may
  be sealed, see `PromptEngine.Redact`). Returns `{:error, {reason, message}}`
  with a message naming the fix when the executable or Node is missing or
  Node is too old, or the app env's `schema` is not a schema name. The
  returned `env` holds secrets in the clear: hand it to `Port.open/2` and
  keep it sealed.

      {:ok, %{executable: _, args: _, env: _}} = PromptEngine.Sidecar.resolve(index: 1)
  """
  @spec resolve(keyword()) :: {:ok, spec()} | {:error, {atom(), String.t()}}
  def resolve(opts) do
    with {:ok, exe} <- executable(opts),
         {:ok, node} <- node(opts, exe),
         {:ok, schema} <- schema(opts) do
      data_dir = data_dir(opts)
      args = PromptEngine.Redact.unseal(Keyword.get(opts, :args, ["--port-fds"]))

      derived =
        [{"PROMPT_ENGINE_DATA_DIR", data_dir}] ++
          case PromptEngine.Redact.unseal(option(opts, :database_url)) do
            nil -> []
            url -> [{"DATABASE_URL", url}]
          end ++
          if(schema, do: [{"PROMPT_ENGINE_DB_SCHEMA", schema}], else: []) ++
          dashboard(opts) ++
          if(node, do: [{"NODE", node}], else: [])

      env = merge_env(derived, PromptEngine.Redact.unseal(Keyword.get(opts, :env, [])))

      {spawn, args} = if String.ends_with?(exe, ".js"), do: {node, [exe | args]}, else: {exe, args}
      {:ok, %{executable: spawn, args: args, env: env, data_dir: data_dir, node: node}}
    end
  end

  @doc """
  The default executable: `priv/sidecar/dist/port/main.js` of the
  `:prompt_engine` application, wherever it is at run time (`deps/`,
  `_build/`, a release's `lib/`). `nil` when the application is not on the
  code path.

      PromptEngine.Sidecar.default_executable()
      #=> ".../_build/prod/lib/prompt_engine/priv/sidecar/dist/port/main.js"
  """
  @spec default_executable() :: String.t() | nil
  def default_executable do
    case :code.priv_dir(:prompt_engine) do
      {:error, _} -> nil
      dir -> Path.join(List.to_string(dir), @entry)
    end
  end

  @doc """
  The data directory of sidecar `:index` (default 1) of instance `:name`
  (default `PromptEngine`): `<data_dir option>/<index>`, else
  `<app env data_dir>/<instance>/<index>`, else
  `<default_data_root()>/<instance>/<index>`.

      "/srv/pe/2" = PromptEngine.Sidecar.data_dir(data_dir: "/srv/pe", index: 2)
  """
  @spec data_dir(keyword()) :: String.t()
  def data_dir(opts) do
    index = Integer.to_string(Keyword.get(opts, :index, 1))

    case Keyword.get(opts, :data_dir) do
      nil ->
        root = Application.get_env(:prompt_engine, :data_dir) || default_data_root()
        Path.expand(Path.join([root, instance_dir(Keyword.get(opts, :instance, PromptEngine)), index]))

      dir ->
        Path.expand(Path.join(dir, index))
    end
  end

  @doc """
  Where data directories go by default: `_build/<env>/prompt_engine_data`
  of the running Mix project (dev and test data stay apart),
  `$RELEASE_ROOT/prompt_engine_data` in a release, else
  `<tmp>/prompt_engine_data`.

      PromptEngine.Sidecar.default_data_root()
      #=> "/opt/my_app/prompt_engine_data"
  """
  @spec default_data_root() :: String.t()
  def default_data_root do
    cond do
      build = mix_build_path() -> Path.join(build, "prompt_engine_data")
      root = System.get_env("RELEASE_ROOT") -> Path.join(root, "prompt_engine_data")
      true -> Path.join(System.tmp_dir!(), "prompt_engine_data")
    end
  end

  @doc """
  Check that `node` runs and is version #{@min_node_major} or newer (cached per binary once it passed).

      :ok = PromptEngine.Sidecar.check_node(System.find_executable("node"))
  """
  @spec check_node(String.t()) :: :ok | {:error, {atom(), String.t()}}
  def check_node(node) do
    key = {__MODULE__, :node_ok, node}

    if :persistent_term.get(key, false) do
      :ok
    else
      result =
        try do
          System.cmd(node, ["--version"], stderr_to_stdout: true)
        rescue
          e -> {Exception.message(e), :error}
        end

      case result do
        {"v" <> version, 0} ->
          case Integer.parse(version) do
            {major, _} when major >= @min_node_major ->
              :persistent_term.put(key, true)
              :ok

            _ ->
              {:error,
               {:node_too_old,
                "prompt-engine needs Node >= #{@min_node_major}, but #{node} is #{String.trim("v" <> version)}. Install Node #{@min_node_major}+ on this machine, or point `node:` (start option) / `config :prompt_engine, node: \"/path/to/node\"` at one."}}
          end

        {out, _} ->
          {:error,
           {:node_not_found,
            "prompt-engine could not run #{node} --version: #{String.trim(out)}. Install Node >= #{@min_node_major}, or set `node:` / `config :prompt_engine, node: \"/path/to/node\"`."}}
      end
    end
  end

  # -- internals --------------------------------------------------------------

  defp schema(opts) do
    case option(opts, :schema) do
      nil ->
        {:ok, nil}

      s ->
        if PromptEngine.Supervisor.schema?(s),
          do: {:ok, s},
          else:
            {:error,
             {:bad_option,
              "schema #{inspect(s)} (config :prompt_engine, schema: ...) is not a PostgreSQL schema name: lower-case letters, digits and _, at most 63, not starting with a digit"}}
    end
  end

  # Only the pool's first sidecar serves the dashboard (one port, one page for the instance).
  defp dashboard(opts) do
    case {Keyword.get(opts, :index, 1), PromptEngine.Redact.unseal(Keyword.get(opts, :dashboard))} do
      {1, %{host: host, port: port} = d} ->
        host = if String.contains?(host, ":"), do: "[#{host}]", else: host
        [{"PROMPT_ENGINE_DASHBOARD", "#{host}:#{port}"}] ++ if(d[:token], do: [{"PROMPT_ENGINE_DASHBOARD_TOKEN", d[:token]}], else: [])

      _ ->
        []
    end
  end

  defp executable(opts) do
    case option(opts, :executable) do
      nil ->
        case default_executable() do
          nil -> {:error, {:executable_not_found, not_built_message(nil)}}
          exe -> if File.regular?(exe), do: {:ok, exe}, else: {:error, {:executable_not_found, not_built_message(exe)}}
        end

      exe ->
        exe = Path.expand(to_string(exe))

        cond do
          not File.regular?(exe) ->
            {:error,
             {:executable_not_found,
              "prompt-engine sidecar executable #{exe} (from the `executable:` option or `config :prompt_engine, executable: ...`) does not exist. Point it at the sidecar's dist/port/main.js or port/prompt_engine, or remove it to use the one built into priv/sidecar (docs/deploying.md)."}}

          String.ends_with?(exe, ".js") or executable_file?(exe) ->
            {:ok, exe}

          true ->
            {:error,
             {:executable_not_found,
              "prompt-engine sidecar executable #{exe} is not executable (chmod +x it, or point `executable:` at a .js entry to run it with node)."}}
        end
    end
  end

  defp not_built_message(path) do
    where = if path, do: " at #{path}", else: " (the :prompt_engine application is not on the code path)"

    "the prompt-engine sidecar is not built#{where}. It is built into the client's priv/sidecar by `mix compile` " <>
      "when the whole repository is checked out: use a path dependency on the repository's elixir_client/, or " <>
      "`{:prompt_engine, git: ..., subdir: \"elixir_client\"}` (not `sparse:`, which leaves the sidecar out), " <>
      "then run `mix prompt_engine.sidecar`. Or set `executable:` / `config :prompt_engine, executable: ...` " <>
      "to a built sidecar. See docs/deploying.md."
  end

  defp node(opts, exe) do
    case option(opts, :node) do
      false ->
        if String.ends_with?(exe, ".js"),
          do: {:error, {:node_not_found, "`node: false` but the executable #{exe} is a .js file, which needs Node to run"}},
          else: {:ok, nil}

      nil ->
        case System.find_executable("node") do
          nil ->
            {:error,
             {:node_not_found,
              "prompt-engine needs Node >= #{@min_node_major}, and there is no `node` on the PATH. Install it, or set `node:` (start option) / `config :prompt_engine, node: \"/path/to/node\"`."}}

          node ->
            with :ok <- check_node(node), do: {:ok, node}
        end

      node ->
        node = to_string(node)
        found = if String.contains?(node, "/"), do: Path.expand(node), else: System.find_executable(node)

        if found && File.regular?(found) do
          with :ok <- check_node(found), do: {:ok, found}
        else
          {:error,
           {:node_not_found,
            "the Node binary #{node} (from `node:` or `config :prompt_engine, node: ...`) was not found. Point it at Node >= #{@min_node_major}."}}
        end
    end
  end

  # A start option wins over the app env; an option given as nil falls through to the app env.
  defp option(opts, key) do
    case Keyword.fetch(opts, key) do
      {:ok, v} when v != nil -> v
      _ -> Application.get_env(:prompt_engine, key)
    end
  end

  defp merge_env(derived, user) do
    Enum.reduce(user, derived, fn {k, v}, acc -> List.keystore(acc, to_string(k), 0, {to_string(k), v}) end)
    |> Enum.map(fn
      {k, v} when v in [nil, false] -> {to_charlist(k), false}
      {k, v} -> {to_charlist(k), to_charlist(v)}
    end)
  end

  defp executable_file?(path) do
    case File.stat(path) do
      {:ok, %File.Stat{mode: mode}} -> Bitwise.band(mode, 0o111) != 0
      _ -> false
    end
  end

  defp instance_dir(name), do: name |> inspect() |> String.replace(~r/[^A-Za-z0-9_.-]/, "_")

  # Under Mix (dev, test, `mix run`), the top project's build path; nil in a release or a
  # plain `elixir` VM (Mix loadable but not running). Called through apply/3: :mix is not a
  # dependency of this application.
  defp mix_build_path do
    mod = Mix.Project

    if Process.whereis(Mix.ProjectStack) != nil and Code.ensure_loaded?(mod) and apply(mod, :get, []) != nil do
      apply(mod, :build_path, [])
    end
  rescue
    _ -> nil
  catch
    :exit, _ -> nil
  end

  @doc false
  # Send `signal` ("-9", "-TERM") to an OS process with the system's kill; without one on the
  # PATH (a slim image) nothing is sent: closing the Port already ends the sidecar (input EOF,
  # its parent watchdog), only later. Never raises.
  @spec signal(integer(), String.t()) :: :ok
  def signal(os_pid, signal) when is_integer(os_pid) do
    with kill when is_binary(kill) <- System.find_executable("kill") do
      try do
        System.cmd(kill, [signal, Integer.to_string(os_pid)], stderr_to_stdout: true)
      rescue
        _ -> :ok
      end
    end

    :ok
  end
end
