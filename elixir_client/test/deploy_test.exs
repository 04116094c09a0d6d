defmodule PromptEngine.DeployTest do
  # docs/deploying.md, followed: a throwaway app with the client as a git dependency
  # (subdir: "elixir_client") on a file:// snapshot of this working tree, `mix release`
  # (MIX_ENV=prod, HEX_OFFLINE=1), the release moved elsewhere, the app and the snapshot
  # deleted, then `bin/my_app start` + `rpc` calling health and choose_prompt.
  # Run alone: mix test --only deploy
  use ExUnit.Case, async: false

  @moduletag :deploy
  @moduletag timeout: 300_000

  @root Path.expand("../..", __DIR__)
  @doc_path Path.join(@root, "docs/deploying.md")
  @doc_git ~s(git: "https://github.com/your-org/prompt-engine.git", tag: "v0.1.0")

  setup do
    tmp = Path.join(System.tmp_dir!(), "pe-deploy-#{System.unique_integer([:positive])}")
    File.mkdir_p!(tmp)
    on_exit(fn -> File.rm_rf(tmp) end)
    {:ok, tmp: tmp}
  end

  test "a release of an app with the client as a git dependency runs after being moved", %{tmp: tmp} do
    t0 = System.monotonic_time(:millisecond)
    {repo, sha} = snapshot_repo(Path.join(tmp, "repo"))

    # The app: mix.exs, application and runtime config exactly as the doc shows them.
    app = Path.join(tmp, "my_app")
    blocks = doc_blocks()
    assert Map.keys(blocks) |> Enum.sort() == ["config/runtime.exs", "lib/my_app/application.ex", "mix.exs"]
    assert blocks["mix.exs"] =~ @doc_git
    blocks = Map.update!(blocks, "mix.exs", &String.replace(&1, @doc_git, ~s(git: "file://#{repo}", ref: "#{sha}")))

    for {path, text} <- blocks do
      File.mkdir_p!(Path.dirname(Path.join(app, path)))
      File.write!(Path.join(app, path), text)
    end

    mix!(app, ["deps.get"])
    mix!(app, ["release"])
    t_built = System.monotonic_time(:millisecond)

    # Move the release and delete everything it was built from.
    rel = Path.join(tmp, "opt/my_app")
    File.mkdir_p!(Path.dirname(rel))
    File.rename!(Path.join(app, "_build/prod/rel/my_app"), rel)
    File.rm_rf!(app)
    File.rm_rf!(repo)
    assert File.regular?(Path.join(rel, "lib/prompt_engine-0.1.0/priv/sidecar/dist/port/main.js"))
    assert symlinks(rel) == [], "the release must be self-contained"

    # PGlite in the configured data dir.
    data = Path.join(tmp, "data")
    out = with_release(rel, [{"MY_APP_DATA_DIR", data}], &rpc_calls/1)
    assert out =~ "DEPLOY_OK"
    assert File.dir?(Path.join(data, "PromptEngine/1/pglite")), "data_dir from runtime.exs reached the sidecar: #{inspect(File.ls(data))}"

    # PostgreSQL through database_url from runtime.exs: no PGlite in its data dir.
    if url = System.get_env("TEST_DATABASE_URL") do
      data_pg = Path.join(tmp, "data_pg")
      out = with_release(rel, [{"MY_APP_DATA_DIR", data_pg}, {"MY_APP_PROMPT_ENGINE_DATABASE_URL", url}], &rpc_calls/1)
      assert out =~ "DEPLOY_OK"
      refute File.exists?(Path.join(data_pg, "PromptEngine/1/pglite"))
    end

    IO.puts(:stderr, "deploy test: release built in #{t_built - t0} ms, total #{System.monotonic_time(:millisecond) - t0} ms")
  end

  # The working tree as git sees it (tracked and untracked-but-not-ignored files), committed
  # to a fresh repository: what `git push` would publish, uncommitted edits included.
  defp snapshot_repo(dest) do
    {files, 0} = System.cmd("git", ["ls-files", "-z", "--cached", "--others", "--exclude-standard"], cd: @root)

    for rel <- String.split(files, <<0>>, trim: true), src = Path.join(@root, rel), File.regular?(src) do
      target = Path.join(dest, rel)
      File.mkdir_p!(Path.dirname(target))
      File.cp!(src, target)
      File.chmod!(target, File.stat!(src).mode)
    end

    git!(dest, ["init", "-q"])
    git!(dest, ["add", "-A"])
    git!(dest, ["-c", "user.name=deploy-test", "-c", "user.email=deploy-test@localhost", "commit", "-q", "-m", "snapshot"])
    {dest, String.trim(git!(dest, ["rev-parse", "HEAD"]))}
  end

  defp doc_blocks do
    for [_, path, body] <- Regex.scan(~r/```elixir\n# (\S+)\n(.*?)```/s, File.read!(@doc_path)), into: %{} do
      {path, "# #{path}\n" <> body}
    end
  end

  defp mix!(dir, args) do
    env = [
      {"MIX_ENV", "prod"},
      {"HEX_OFFLINE", "1"},
      {"MIX_BUILD_PATH", nil},
      {"MIX_DEPS_PATH", nil},
      {"MIX_EXS", nil},
      {"MIX_LOCKFILE", nil}
    ]

    # docs/deploying.md "Offline and CI builds": reuse this checkout's node_modules instead of npm ci.
    nm = Path.join(@root, "node_modules")
    env = if File.dir?(nm), do: [{"PROMPT_ENGINE_NODE_MODULES", nm} | env], else: env

    {out, status} = System.cmd(System.find_executable("mix"), args, cd: dir, env: env, stderr_to_stdout: true)
    assert status == 0, "mix #{Enum.join(args, " ")} failed (#{status}):\n#{out}"
    out
  end

  defp git!(dir, args) do
    {out, status} = System.cmd("git", args, cd: dir, stderr_to_stdout: true)
    assert status == 0, "git #{Enum.join(args, " ")} failed:\n#{out}"
    out
  end

  # `bin/my_app start` in the background, fun.(rpc) once it answers, then `bin/my_app stop`.
  defp with_release(rel, env, fun) do
    bin = Path.join(rel, "bin/my_app")
    env = [{"RELEASE_NODE", "my_app_#{System.unique_integer([:positive])}"}, {"DATABASE_URL", nil} | env]
    port = Port.open({:spawn_executable, bin}, [:binary, :exit_status, :stderr_to_stdout, args: ["start"], env: Enum.map(env, fn {k, v} -> {to_charlist(k), if(v, do: to_charlist(v), else: false)} end)])

    rpc = fn expr ->
      {out, status} = System.cmd(bin, ["rpc", expr], env: env, stderr_to_stdout: true)
      {status, out}
    end

    try do
      wait_until(fn -> match?({0, _}, rpc.("IO.puts(:up)")) end, 30_000, port)
      fun.(rpc)
    after
      rpc.("System.stop()")

      receive do
        {^port, {:exit_status, _}} -> :ok
      after
        15_000 -> flunk("the release did not stop")
      end
    end
  end

  defp rpc_calls(rpc) do
    {status, out} =
      rpc.("""
      {:ok, %{status: "ok"}} = PromptEngine.health(timeout: 30_000)
      # the first call that needs the store opens it (PGlite: creates the database)
      {:ok, %{prompt: "Classify the ticket.", prompt_id: _}} = PromptEngine.choose_prompt("deploy_test", "Classify the ticket.", %{model: "m"}, timeout: 30_000)
      IO.puts("DEPLOY_OK")
      """)

    assert status == 0 and out =~ "DEPLOY_OK", "rpc failed (#{status}):\n#{out}"
    out
  end

  defp wait_until(check, ms, port) do
    cond do
      check.() ->
        :ok

      ms <= 0 ->
        flunk("the release did not come up: #{drain(port)}")

      true ->
        receive do
          {^port, {:exit_status, s}} -> flunk("the release exited (#{s}) while starting: #{drain(port)}")
        after
          250 -> wait_until(check, ms - 250, port)
        end
    end
  end

  defp drain(port, acc \\ "") do
    receive do
      {^port, {:data, d}} -> drain(port, acc <> d)
    after
      0 -> acc
    end
  end

  defp symlinks(dir) do
    Path.wildcard(Path.join(dir, "**"), match_dot: true)
    |> Enum.filter(&match?({:ok, %File.Stat{type: :symlink}}, File.lstat(&1)))
  end
end
