defmodule PromptEngine.MixProject do
  use Mix.Project

  def project do
    [
      app: :prompt_engine,
      version: "0.1.0",
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      deps: [],
      description: "Elixir client for the prompt-engine sidecar (Erlang Port or NATS): prompt optimization, templates, tracking, learned scoring.",
      docs: [main: "PromptEngine"]
    ]
  end

  # No application callback: add `{PromptEngine, opts}` to your own supervision tree.
  def application do
    [extra_applications: [:logger]]
  end
end
