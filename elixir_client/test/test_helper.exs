# The suites run against the real sidecar: `npm test` builds it first (dist/).
main = Path.expand("../../dist/port/main.js", __DIR__)

unless File.exists?(main) do
  IO.puts(:stderr, "the sidecar is not built: run `npm run build` in the repository root")
  System.halt(1)
end

ExUnit.start(capture_log: true)
