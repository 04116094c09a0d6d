# The suites run against the real sidecar, built into priv/sidecar by `mix compile`
# (the :prompt_engine_sidecar compiler; `npm test` builds dist/ first).
main = PromptEngine.Sidecar.default_executable()

unless main && File.exists?(main) do
  IO.puts(:stderr, "the sidecar is not built into priv/sidecar: run `mix prompt_engine.sidecar` (after `npm ci` in the repository root)")
  System.halt(1)
end

defmodule PromptEngine.TestHelper do
  # The test PostgreSQL of scripts/with-services.sh (npm test): pools and PostgreSQL-only cases need it.
  def pg_url! do
    System.get_env("TEST_DATABASE_URL") || raise "TEST_DATABASE_URL is not set: run through `npm test` or scripts/with-services.sh"
  end

  # TEST_DATABASE_URL with a password in it (the test server trusts every connection, so it is ignored there).
  def pg_url_with_password!(password) do
    uri = URI.parse(pg_url!())
    URI.to_string(%{uri | userinfo: "#{String.split(uri.userinfo || "postgres", ":") |> hd()}:#{password}"})
  end

  def unique_name(mod), do: Module.concat(mod, "I#{System.unique_integer([:positive])}")

  def tmp_dir(prefix) do
    dir = Path.join(System.tmp_dir!(), "#{prefix}-#{System.unique_integer([:positive])}")
    ExUnit.Callbacks.on_exit(fn -> File.rm_rf(dir) end)
    dir
  end

  # Wait on a condition (a signal: a process state, a reply), never a fixed sleep.
  def until(fun, ms, step \\ 10) do
    cond do
      result = fun.() ->
        result

      ms <= 0 ->
        false

      true ->
        Process.sleep(step)
        until(fun, ms - step, step)
    end
  end
end

ExUnit.start(capture_log: true)
