defmodule PromptEngine.SidecarTest do
  # How a sidecar is found and started (PromptEngine.Sidecar); docs/deploying.md.
  use ExUnit.Case, async: false

  alias PromptEngine.Sidecar

  @keys [:executable, :node, :data_dir, :database_url, :schema]

  setup do
    saved = for k <- @keys, do: {k, Application.fetch_env(:prompt_engine, k)}

    on_exit(fn ->
      for {k, v} <- saved do
        case v do
          {:ok, v} -> Application.put_env(:prompt_engine, k, v)
          :error -> Application.delete_env(:prompt_engine, k)
        end
      end
    end)

    for k <- @keys, do: Application.delete_env(:prompt_engine, k)
    tmp = Path.join(System.tmp_dir!(), "pe-sidecar-#{System.unique_integer([:positive])}")
    File.mkdir_p!(tmp)
    on_exit(fn -> File.rm_rf(tmp) end)
    {:ok, tmp: tmp}
  end

  defp env(spec), do: Map.new(spec.env, fn {k, v} -> {List.to_string(k), v && List.to_string(v)} end)

  test "the default is priv/sidecar of the app, run with node, found at run time" do
    assert {:ok, spec} = Sidecar.resolve([])
    main = Path.join(List.to_string(:code.priv_dir(:prompt_engine)), "sidecar/dist/port/main.js")
    assert spec.args == [main, "--port-fds"]
    assert spec.executable == spec.node and spec.node == System.find_executable("node")
    assert PromptEngine.default_executable() == main
  end

  test "data dirs: one per sidecar, under the app's build path by default, never in the dependency" do
    build = Mix.Project.build_path()
    assert Sidecar.data_dir([]) == Path.join(build, "prompt_engine_data/PromptEngine/1")
    assert Sidecar.data_dir(instance: MyApp.PE, index: 2) == Path.join(build, "prompt_engine_data/MyApp.PE/2")
    assert Sidecar.data_dir(instance: :pe, data_dir: "/srv/pe", index: 3) == "/srv/pe/3"

    # The app env is a root shared by instances.
    Application.put_env(:prompt_engine, :data_dir, "/srv/root")
    assert Sidecar.data_dir(instance: MyApp.PE, index: 1) == "/srv/root/MyApp.PE/1"
    assert Sidecar.data_dir(instance: MyApp.PE, index: 1, data_dir: "/srv/own") == "/srv/own/1"

    {:ok, spec} = Sidecar.resolve(instance: MyApp.PE, index: 2)
    assert env(spec)["PROMPT_ENGINE_DATA_DIR"] == "/srv/root/MyApp.PE/2"
  end

  test "database_url goes to the environment, not the command line; env: is applied last" do
    {:ok, spec} = Sidecar.resolve(database_url: "postgres://u:secret@db/x")
    assert env(spec)["DATABASE_URL"] == "postgres://u:secret@db/x"
    refute Enum.any?(spec.args, &(&1 =~ "secret"))

    {:ok, spec} = Sidecar.resolve([])
    refute Map.has_key?(env(spec), "DATABASE_URL"), "unset: the sidecar inherits the VM's"

    Application.put_env(:prompt_engine, :database_url, "postgres://from-config/x")
    {:ok, spec} = Sidecar.resolve(env: [{"PROMPT_ENGINE_DATA_DIR", "/explicit"}, {"LOG_LEVEL", "warn"}, {"NATS_URL", nil}])
    assert %{"DATABASE_URL" => "postgres://from-config/x", "PROMPT_ENGINE_DATA_DIR" => "/explicit", "LOG_LEVEL" => "warn", "NATS_URL" => false} = env(spec)
    assert {~c"NATS_URL", false} in spec.env
  end

  test "executable: a start option wins over the app env; an executable file gets NODE", %{tmp: tmp} do
    launcher = Path.expand("../../port/prompt_engine", __DIR__)
    {:ok, spec} = Sidecar.resolve(executable: launcher)
    assert spec.executable == launcher and spec.args == ["--port-fds"]
    assert env(spec)["NODE"] == System.find_executable("node")

    Application.put_env(:prompt_engine, :executable, Path.join(tmp, "missing.js"))
    assert {:error, {:executable_not_found, msg}} = Sidecar.resolve([])
    assert msg =~ "missing.js" and msg =~ "config :prompt_engine, executable"
    assert {:ok, %{executable: ^launcher}} = Sidecar.resolve(executable: launcher)

    plain = Path.join(tmp, "not_executable")
    File.write!(plain, "")
    assert {:error, {:executable_not_found, msg}} = Sidecar.resolve(executable: plain)
    assert msg =~ "not executable"
  end

  test "a missing executable fails the start with a message naming the fix", %{tmp: tmp} do
    Process.flag(:trap_exit, true)
    assert {:error, reason} = PromptEngine.start_link(name: SidecarTestMissing, executable: Path.join(tmp, "nope.js"))
    assert inspect(reason) =~ "executable_not_found"
    assert inspect(reason) =~ "nope.js"
  end

  test "Node is checked: missing, too old, or skipped with node: false", %{tmp: tmp} do
    assert {:error, {:node_not_found, msg}} = Sidecar.resolve(node: Path.join(tmp, "node"))
    assert msg =~ "Node >= 20"

    old = Path.join(tmp, "old-node")
    File.write!(old, "#!/bin/sh\necho v18.19.0\n")
    File.chmod!(old, 0o755)
    assert {:error, {:node_too_old, msg}} = Sidecar.resolve(node: old)
    assert msg =~ "v18.19.0" and msg =~ "Node >= 20" and msg =~ "node:"

    Application.put_env(:prompt_engine, :node, old)
    assert {:error, {:node_too_old, _}} = Sidecar.resolve([])

    launcher = Path.expand("../../port/prompt_engine", __DIR__)
    assert {:ok, %{executable: ^launcher, node: nil}} = Sidecar.resolve(executable: launcher, node: false)
    assert {:error, {:node_not_found, _}} = Sidecar.resolve(node: false)
  end

  test "schema: the start option or the app env, as PROMPT_ENGINE_DB_SCHEMA; unset by default; checked" do
    {:ok, spec} = Sidecar.resolve([])
    refute Map.has_key?(env(spec), "PROMPT_ENGINE_DB_SCHEMA")
    {:ok, spec} = Sidecar.resolve(schema: "my_app_prompts")
    assert env(spec)["PROMPT_ENGINE_DB_SCHEMA"] == "my_app_prompts"

    Application.put_env(:prompt_engine, :schema, "from_config")
    {:ok, spec} = Sidecar.resolve([])
    assert env(spec)["PROMPT_ENGINE_DB_SCHEMA"] == "from_config"
    Application.put_env(:prompt_engine, :schema, "Bad-Name")
    assert {:error, {:bad_option, msg}} = Sidecar.resolve([])
    assert msg =~ "Bad-Name"

    assert {:error, %PromptEngine.Error{reason: :bad_option, message: msg}} = PromptEngine.Supervisor.validate(schema: "1abc")
    assert msg =~ "start option :schema must be a PostgreSQL schema name"
    assert {:ok, _} = PromptEngine.Supervisor.validate(schema: "prompt_engine")
  end

  test "dashboard: validated; only the pool's first sidecar gets PROMPT_ENGINE_DASHBOARD and its token" do
    assert {:ok, opts} = PromptEngine.Supervisor.validate(dashboard: [port: 4050, token: "t0ken-x"])
    d = opts[:dashboard]
    assert is_function(d, 0), "the dashboard option (its token) is kept sealed"
    assert d.() == %{port: 4050, host: "127.0.0.1", token: "t0ken-x"}

    {:ok, first} = Sidecar.resolve(index: 1, dashboard: d)
    assert %{"PROMPT_ENGINE_DASHBOARD" => "127.0.0.1:4050", "PROMPT_ENGINE_DASHBOARD_TOKEN" => "t0ken-x"} = env(first)
    {:ok, second} = Sidecar.resolve(index: 2, dashboard: d)
    refute Map.has_key?(env(second), "PROMPT_ENGINE_DASHBOARD")
    refute Map.has_key?(env(second), "PROMPT_ENGINE_DASHBOARD_TOKEN")

    {:ok, opts} = PromptEngine.Supervisor.validate(dashboard: %{port: 4051, host: "::1"})
    {:ok, spec} = Sidecar.resolve(index: 1, dashboard: opts[:dashboard])
    assert env(spec)["PROMPT_ENGINE_DASHBOARD"] == "[::1]:4051"
    refute Map.has_key?(env(spec), "PROMPT_ENGINE_DASHBOARD_TOKEN")

    assert {:error,
            %PromptEngine.Error{reason: :bad_option, message: "prot: unknown key of the dashboard start option (did you mean port?); known: host, port, token"}} =
             PromptEngine.Supervisor.validate(dashboard: [prot: 4050])

    assert {:error, %PromptEngine.Error{reason: :bad_option, message: msg}} = PromptEngine.Supervisor.validate(dashboard: [port: 0])
    assert msg =~ "port must be an integer in 1..65535"
    assert {:error, %PromptEngine.Error{reason: :bad_option}} = PromptEngine.Supervisor.validate(dashboard: [port: 4050, token: ""])
    assert {:error, %PromptEngine.Error{reason: :bad_option}} = PromptEngine.Supervisor.validate(dashboard: "4050")
  end

  test "unknown start options: the closest known one is named" do
    assert {:error, %PromptEngine.Error{reason: :bad_option, message: msg}} = PromptEngine.Supervisor.validate(pool_sise: 2)
    assert msg =~ "unknown start option :pool_sise (did you mean :pool_size?); known options: "
  end
end
