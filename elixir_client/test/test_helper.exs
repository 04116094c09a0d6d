# The suites run against the real sidecar, built into priv/sidecar by `mix compile`
# (the :prompt_engine_sidecar compiler; `npm test` builds dist/ first).
main = PromptEngine.Sidecar.default_executable()

unless main && File.exists?(main) do
  IO.puts(:stderr, "the sidecar is not built into priv/sidecar: run `mix prompt_engine.sidecar` (after `npm ci` in the repository root)")
  System.halt(1)
end

ExUnit.start(capture_log: true)
