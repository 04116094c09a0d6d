#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine (as root), only when missing:
# Erlang/Elixir (real erl for codec cross-checks, the Elixir client's ExUnit suite),
# nats-server, PostgreSQL 15, a C compiler (the baseline echo port of the benchmark),
# Debian's chromium (the dashboard's browser test drives it with playwright-core; no
# browser is ever downloaded), and the npm dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v erl >/dev/null 2>&1 || need+=(erlang-base erlang-dev)
command -v elixir >/dev/null 2>&1 || need+=(elixir)
[ -x /usr/sbin/nats-server ] || command -v nats-server >/dev/null 2>&1 || need+=(nats-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
[ -f /usr/lib/erlang/usr/include/ei.h ] || need+=(erlang-dev)
[ -x /usr/bin/chromium ] || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  echo "provision: installing ${need[*]}" >&2
  if [ "$(id -u)" != 0 ]; then
    echo "provision: not root; install these yourself: ${need[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "provision: npm ci" >&2
  npm ci --no-audit --no-fund >&2
fi
