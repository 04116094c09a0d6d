#!/usr/bin/env bash
# The counting trigger's cost per statement, in PostgreSQL alone (issue 21):
#   npm run build && bash scripts/with-services.sh bash bench/sql/trigger-cost.sh
# Migrates a fresh schema of its own (the CLI's health opens the store), creates
# 100 experiments, then inserts their executions in statements of 1, 50 and
# 150 rows (as many different variants), 40 statements each, under EXPLAIN
# ANALYZE, with the loop's NOTIFY channel set as a sidecar sets it: the
# trigger's time and the statement's, per statement, with the counting
# trigger, with it but without its notice and NOTIFY (what the totals' way
# back to the sidecar and the announcement cost), with a no-op statement
# trigger reading the same transition table instead, and with none.
# The schema is dropped at the end.
set -euo pipefail
schema="bench_trigger_$$"
export DATABASE_URL=$TEST_DATABASE_URL PROMPT_ENGINE_DB_SCHEMA=$schema
if ! out=$(node dist/src/cli.js health 2>&1); then echo "the store did not open: $out" >&2; exit 1; fi
export PGOPTIONS="-c search_path=$schema -c client_min_messages=warning -c prompt_engine.loop_channel=bench_trigger -c prompt_engine.instance=bench"
P="psql -q -X -v ON_ERROR_STOP=1 $TEST_DATABASE_URL"
tmp=$(mktemp -d)
trap '$P -c "DROP SCHEMA $schema CASCADE" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
$P -c "INSERT INTO experiments (name, model, generation, base_prompt_id) SELECT 'e' || i, 'm', 1, 'p0' FROM generate_series(0, 99) i"
q() { echo "EXPLAIN (ANALYZE, SUMMARY ON) INSERT INTO prompt_executions (id, prompt_id, execution_time_ms, success, \"timestamp\", metadata) SELECT gen_random_uuid(), 'p' || (i % 5), 1, (i % 2 = 0), now(), jsonb_build_object('experiment', 'e' || ((i * 7 + $2) % 100), 'model', 'm', 'generation', '1') FROM generate_series(1, $1) i;"; }
for n in 1 50 150; do for r in $(seq 1 40); do q "$n" "$r"; done >"$tmp/t$n.sql"; done
measure() {
  for n in 1 50 150; do
    $P -f "$tmp/t$n.sql" | grep -E "Trigger|Execution Time" | awk -v n=$n -v l="$1" '
      /Trigger/ { match($0, /time=[0-9.]+/); t += substr($0, RSTART + 5, RLENGTH - 5); c++ }
      /Execution Time/ { e += $3; k++ }
      END { printf "| %s | %d | %.3f | %.3f |\n", l, n, (c ? t / c : 0), e / k }'
  done
}
echo "| trigger | rows a statement | trigger ms a statement | statement ms |"
echo "|---|---:|---:|---:|"
measure "counting (migration 9)"
$P -c "CREATE OR REPLACE FUNCTION count_loop_announce(totals text, keys text) RETURNS void LANGUAGE plpgsql AS \$\$ BEGIN END \$\$"
measure "counting, without its notice and NOTIFY"
$P -c "ALTER TABLE prompt_executions DISABLE TRIGGER prompt_executions_count_loop_outcomes"
$P -c "CREATE FUNCTION bench_noop() RETURNS trigger LANGUAGE plpgsql AS \$\$ BEGIN RETURN NULL; END \$\$"
$P -c "CREATE TRIGGER bench_noop AFTER INSERT ON prompt_executions REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION bench_noop()"
measure "no-op, same transition table"
$P -c "DROP TRIGGER bench_noop ON prompt_executions"
measure "none"
