#!/usr/bin/env bash
# `npm test`: provision, build, then every suite (vitest, then the Elixir client's ExUnit)
# against a private nats-server and PostgreSQL that live only for this run.
# Extra arguments go to vitest (e.g. `npm test -- test/port.test.ts`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/provision.sh
npm run build --silent
npx tsc -p tsconfig.test.json   # the suites are strict TypeScript too
out=$(mktemp -d /tmp/prompt-engine-results.XXXXXX)
trap 'rm -rf "$out"' EXIT
bash scripts/with-services.sh bash -c '
  set -o pipefail
  out=$1; shift
  rc=0
  npx vitest run --reporter=default --reporter=json --outputFile.json="$out/vitest.json" "$@" || rc=1
  if [ $# -eq 0 ]; then
    (cd elixir_client && MIX_ENV=test mix test 2>&1) | tee "$out/exunit.txt" || rc=1
  fi
  exit $rc
' test-suites "$out" "$@" && rc=0 || rc=$?
node scripts/summarize-tests.mjs "$out"
exit $rc
