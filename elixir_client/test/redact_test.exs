defmodule PromptEngine.RedactTest do
  # The examples in PromptEngine.Redact's docs run as tests: what they show is what it does.
  use ExUnit.Case, async: true
  doctest PromptEngine.Redact

  alias PromptEngine.Redact

  test "a URL's user information: the password up to the last @, a NATS token alone, a user without a password kept" do
    env = [
      {"DATABASE_URL", "postgres://app:p@ss@w0rd@db:5432/app?sslmode=require"},
      {"NATS_URL", "nats://tok3n-abc@n1:4222,tls://tok3n-abc@n2:4222"},
      {"OTHER_URL", "postgres://app@db/app"}
    ]

    assert Redact.env(env) == [
             {"DATABASE_URL", "postgres://app:***@db:5432/app?sslmode=require"},
             {"NATS_URL", "nats://***@n1:4222,tls://***@n2:4222"},
             {"OTHER_URL", "postgres://app@db/app"}
           ]

    assert Redact.secrets(env) == ["p@ss@w0rd", "tok3n-abc"]
    shown = inspect(Redact.env(env))
    refute shown =~ "w0rd"
    refute shown =~ "tok3n"
  end
end
