#!/usr/bin/env bash
# Runs a command with a private nats-server (JetStream on) and a private PostgreSQL,
# each on a free loopback port in a temp dir, and stops both afterwards.
# Exports for the command:
#   TEST_NATS_URL, TEST_NATS_PORT     nats://127.0.0.1:<port>
#   TEST_DATABASE_URL                 postgres://postgres@127.0.0.1:<port>/prompt_engine_test
#   TEST_PG_BIN, TEST_PGDATA          so outage tests can stop/start the server (as user postgres)
#   TEST_NATS_SERVER                  the nats-server binary, for tests that run their own
#   TEST_TMP                          the temp dir
# The command runs where this script was called from (another checkout's tests
# run as that checkout's, not as the one this script lives in).
set -euo pipefail

free_port() { node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{process.stdout.write(String(s.address().port));s.close()})"; }

TEST_TMP=$(mktemp -d /tmp/prompt-engine-test.XXXXXX)
chmod 755 "$TEST_TMP"
NATS_BIN=$(command -v nats-server || echo /usr/sbin/nats-server)
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
nats_pid=""
pg_started=""

as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

cleanup() {
  local rc=$?
  [ -n "$nats_pid" ] && kill "$nats_pid" 2>/dev/null && wait "$nats_pid" 2>/dev/null || true
  if [ -n "$pg_started" ]; then as_pg "$PG_BIN/pg_ctl" -D "$TEST_TMP/pg" -m immediate stop >/dev/null 2>&1 || true; fi
  rm -rf "$TEST_TMP"
  exit $rc
}
trap cleanup EXIT INT TERM

# nats-server with JetStream
NATS_PORT=$(free_port)
mkdir -p "$TEST_TMP/js"
"$NATS_BIN" -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$TEST_TMP/js" >"$TEST_TMP/nats.log" 2>&1 &
nats_pid=$!

# PostgreSQL, as the postgres user in a dir it owns
PG_PORT=$(free_port)
mkdir -p "$TEST_TMP/pg" "$TEST_TMP/pgsock"
[ "$(id -u)" = 0 ] && chown postgres:postgres "$TEST_TMP/pg" "$TEST_TMP/pgsock"
as_pg "$PG_BIN/initdb" -D "$TEST_TMP/pg" -A trust -U postgres --no-sync >"$TEST_TMP/initdb.log" 2>&1
cat >>"$TEST_TMP/pg/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$TEST_TMP/pgsock'
fsync = off
max_connections = 200
CONF
as_pg "$PG_BIN/pg_ctl" -D "$TEST_TMP/pg" -l "$TEST_TMP/pg/server.log" -w start >/dev/null
pg_started=1
as_pg "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres prompt_engine_test

for _ in $(seq 50); do (echo >/dev/tcp/127.0.0.1/"$NATS_PORT") 2>/dev/null && break; sleep 0.1; done

export TEST_TMP TEST_NATS_PORT=$NATS_PORT TEST_NATS_URL="nats://127.0.0.1:$NATS_PORT" TEST_NATS_SERVER="$NATS_BIN"
export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/prompt_engine_test" TEST_PG_BIN="$PG_BIN" TEST_PGDATA="$TEST_TMP/pg" TEST_PG_PORT=$PG_PORT
echo "with-services: nats on $NATS_PORT, postgres on $PG_PORT, tmp $TEST_TMP" >&2
"$@"
