defmodule PromptEngine.ReadmeExampleTest do
  use ExUnit.Case, async: false

  @example Path.expand("../examples/quickstart.exs", __DIR__)
  @readme Path.expand("../../README.md", __DIR__)

  test "the README's Elixir example is the file the tests run" do
    example = File.read!(@example)
    assert File.read!(@readme) =~ example
  end

  test "the README's Elixir example runs as written" do
    # Every line is a match that fails loudly; the example ends by stopping what it started.
    {_result, _binding} = Code.eval_file(@example)
    assert {:error, %PromptEngine.Error{reason: :no_instance}} = PromptEngine.health()
  end
end
