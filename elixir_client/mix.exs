defmodule PromptEngine.MixProject do
  use Mix.Project

  def project do
    [
      app: :prompt_engine,
      version: "0.1.0",
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      # Builds the Node sidecar into priv/sidecar (Mix.Tasks.PromptEngine.Sidecar, docs/deploying.md).
      compilers: Mix.compilers() ++ [:prompt_engine_sidecar],
      deps: [],
      description: "Elixir client for the prompt-engine sidecar (Erlang Port or NATS): prompt optimization, templates, tracking, learned scoring.",
      docs: [main: "PromptEngine"]
    ]
  end

  # No application callback: add `{PromptEngine, opts}` to your own supervision tree.
  def application do
    [extra_applications: [:logger, :crypto]]
  end
end
