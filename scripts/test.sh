#!/usr/bin/env bash
# `npm test`: provision, build, then every suite (vitest, then the Elixir client's ExUnit)
# against a private nats-server and PostgreSQL that live only for this run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/provision.sh
npm run build --silent
bash scripts/with-services.sh bash -c '
  set -euo pipefail
  npx vitest run "$@"
  (cd elixir_client && MIX_ENV=test mix test)
' test-suites "$@"
