defmodule Mix.Tasks.PromptEngine.Sidecar do
  @shortdoc "Builds the prompt-engine sidecar into the client's priv/sidecar"
  @moduledoc """
  Builds the Node sidecar into `priv/sidecar/` of the `:prompt_engine`
  application, so that the client finds it at run time wherever the app
  is (`deps/`, `_build/`, a moved `mix release`):

      mix prompt_engine.sidecar [--force]

  `mix compile` does the same through the `:prompt_engine_sidecar` compiler
  (listed in the client's `mix.exs`), so you rarely run this by hand. Steps,
  each skipped when its output is up to date:

    1. `npm ci` in the repository root when it has no `node_modules/`
       (needs the npm registry). With `PROMPT_ENGINE_NODE_MODULES` set to an
       installed `node_modules/` of the same `package-lock.json`, that one is
       linked instead (CI caches, offline builds);
    2. `npm run build` when `dist/` is missing or older than `src/`;
    3. `node scripts/pack-sidecar.mjs <root> priv/sidecar`: `dist/`,
       `package.json`, `models/`, `templates_data/` and the production
       dependencies (for this machine's OS and architecture).

  It needs the whole repository checked out next to the client: a path
  dependency on `elixir_client/`, or a git dependency with
  `subdir: "elixir_client"`. `config :prompt_engine, build_sidecar: false`
  (in the app's `config/config.exs`) turns the compiler off, for apps that
  set `executable:` to a sidecar installed elsewhere. See `docs/deploying.md`.

  Build-time requirements: Node >= 20 and npm on the `PATH`.
  """
  use Mix.Task

  @impl true
  def run(args) do
    {opts, _} = OptionParser.parse!(args, strict: [force: :boolean])

    case project_dir() do
      {:ok, dir} ->
        case build(dir, force: opts[:force] || false) do
          {:error, message} -> Mix.raise(message)
          _ -> :ok
        end

      {:error, message} ->
        Mix.raise(message)
    end
  end

  @doc false
  # Build priv/sidecar of the client project in `client_dir`. Returns :ok (built), :noop (up to date
  # or nothing to build from) or {:error, message}.
  def build(client_dir, opts \\ []) do
    root = Path.dirname(client_dir)
    dest = Path.join([client_dir, "priv", "sidecar"])
    stamp = Path.join(dest, ".fingerprint")

    cond do
      not File.regular?(Path.join(root, "package.json")) or not File.dir?(Path.join(root, "src")) ->
        Mix.shell().error(
          "prompt_engine: the sidecar's sources are not next to the client (#{root}), so priv/sidecar is not built. " <>
            "Use a path dependency on the repository's elixir_client/ or a git dependency with subdir: \"elixir_client\" " <>
            "(not sparse:), or set `executable:` at run time (docs/deploying.md)."
        )

        :noop

      !opts[:force] and File.regular?(Path.join(dest, "dist/port/main.js")) and File.read(stamp) == {:ok, fingerprint(root)} ->
        :noop

      true ->
        Mix.shell().info("==> prompt_engine: building the sidecar into #{Path.relative_to_cwd(dest)}")

        with :ok <- ensure_node_modules(root),
             :ok <- ensure_dist(root),
             :ok <- cmd(node!(), [Path.join(root, "scripts/pack-sidecar.mjs"), root, dest], root) do
          File.write!(stamp, fingerprint(root))
          :ok
        end
    end
  end

  # The client's project dir: this project, or the :prompt_engine dependency of the current one.
  defp project_dir do
    if Mix.Project.config()[:app] == :prompt_engine do
      {:ok, Path.dirname(Mix.Project.project_file())}
    else
      dep = Enum.find(Mix.Dep.cached(), &(&1.app == :prompt_engine))

      case dep do
        nil ->
          {:error, "no :prompt_engine dependency in this project (add it to deps in mix.exs, then mix deps.get)"}

        # :dest is the project dir (with a git subdir:, the subdir of the checkout)
        dep ->
          dest = dep.opts[:dest]
          dir = Enum.find([dest, Path.join(dest, dep.opts[:subdir] || "")], &File.regular?(Path.join(&1, "mix.exs")))
          if dir, do: {:ok, Path.expand(dir)}, else: {:error, "the :prompt_engine dependency at #{dest} has no mix.exs: run mix deps.get"}
      end
    end
  end

  defp ensure_node_modules(root) do
    nm = Path.join(root, "node_modules")

    cond do
      File.dir?(nm) ->
        :ok

      shared = System.get_env("PROMPT_ENGINE_NODE_MODULES") ->
        shared = Path.expand(shared)

        if File.dir?(shared) do
          Mix.shell().info("prompt_engine: linking #{nm} -> #{shared} (PROMPT_ENGINE_NODE_MODULES)")
          _ = File.rm(nm)
          File.ln_s!(shared, nm)
          :ok
        else
          {:error, "PROMPT_ENGINE_NODE_MODULES=#{shared} is not a directory"}
        end

      true ->
        Mix.shell().info("prompt_engine: npm ci in #{root} (first build of this checkout)")
        cmd(npm!(), ["ci", "--no-audit", "--no-fund"], root)
    end
  end

  defp ensure_dist(root) do
    main = Path.join(root, "dist/port/main.js")

    newest_source =
      (Path.wildcard(Path.join(root, "{src,port}/**/*.ts")) ++ [Path.join(root, "tsconfig.json")])
      |> Enum.map(&mtime/1)
      |> Enum.max(fn -> 0 end)

    if File.regular?(main) and mtime(main) >= newest_source do
      :ok
    else
      Mix.shell().info("prompt_engine: npm run build in #{root}")
      cmd(npm!(), ["run", "build", "--silent"], root)
    end
  end

  # What the sidecar is built from: changes here rebuild priv/sidecar.
  defp fingerprint(root) do
    files =
      Path.wildcard(Path.join(root, "{src,port,models,templates_data}/**/*")) ++
        Enum.map(~w(package.json package-lock.json tsconfig.json scripts/pack-sidecar.mjs dist/port/main.js), &Path.join(root, &1))

    entries =
      for f <- Enum.sort(files), {:ok, %File.Stat{type: :regular, size: size, mtime: mtime}} <- [File.stat(f)], do: {Path.relative_to(f, root), size, mtime}

    entries |> :erlang.term_to_binary() |> :erlang.md5() |> Base.encode16(case: :lower)
  end

  defp mtime(path) do
    case File.stat(path, time: :posix) do
      {:ok, %File.Stat{mtime: t}} -> t
      _ -> 0
    end
  end

  defp cmd(exe, args, dir) do
    case System.cmd(exe, args, cd: dir, into: IO.stream(:stdio, :line), stderr_to_stdout: true) do
      {_, 0} -> :ok
      {_, status} -> {:error, "prompt_engine: `#{Path.basename(exe)} #{Enum.join(args, " ")}` in #{dir} failed with status #{status}"}
    end
  end

  defp node!, do: System.find_executable("node") || Mix.raise("prompt_engine: building the sidecar needs Node >= 20 on the PATH")
  defp npm!, do: System.find_executable("npm") || Mix.raise("prompt_engine: building the sidecar needs npm (comes with Node >= 20) on the PATH")
end

defmodule Mix.Tasks.Compile.PromptEngineSidecar do
  @moduledoc """
  The compiler behind `mix compile` that keeps `priv/sidecar/` built; see
  `mix help prompt_engine.sidecar`. Off with
  `config :prompt_engine, build_sidecar: false`.
  """
  use Mix.Task.Compiler

  @impl true
  def run(_args) do
    dir = Path.dirname(Mix.Project.project_file())

    if Application.get_env(:prompt_engine, :build_sidecar, true) == false do
      {:noop, []}
    else
      case Mix.Tasks.PromptEngine.Sidecar.build(dir) do
        :noop ->
          {:noop, []}

        :ok ->
          # With build_embedded, priv was copied into _build before this ran: copy it again.
          Mix.Project.build_structure()
          {:ok, []}

        {:error, message} ->
          Mix.shell().error(message)
          {:error, []}
      end
    end
  end

  @impl true
  def clean do
    File.rm_rf!(Path.join(Path.dirname(Mix.Project.project_file()), "priv/sidecar"))
    :ok
  end
end
