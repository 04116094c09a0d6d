defmodule PromptEngine.ReadmeExampleTest do
  use ExUnit.Case, async: false

  @example Path.expand("../examples/quickstart.exs", __DIR__)
  @readme Path.expand("../../README.md", __DIR__)

  test "the README's Elixir example is the file the tests run" do
    example = File.read!(@example)
    assert File.read!(@readme) =~ example
  end

  test "the README's Elixir example runs as written" do
    {_result, binding} = Code.eval_file(@example)
    assert {:ok, %{status: "ok"}} = PromptEngine.health()
    Supervisor.stop(binding[:sup])
  end
end
