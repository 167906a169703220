#!/usr/bin/env bash
# SES webhook load (issue 13): `notify serve` on loopback takes COUNT correctly signed SNS bounce
# notifications (SignatureVersion 2, the test key; the server trusts its certificate through
# sns_certificate_dir) over CONNECTIONS connections, on SQLite and on PostgreSQL. Prints the load
# generator's figures (requests/s, p50/p99/max latency, statuses), the server's peak RSS, and
# checks that every bounce was recorded exactly once, also after the same COUNT messages are
# posted a second time.
#
#   bash bench/ses.sh            # COUNT=5000 CONNECTIONS=50 CONTACTS=1000 BACKENDS="sqlite postgres"
#
# Needs: cargo, python3, PostgreSQL on 127.0.0.1:5432 (user postgres, trust) for the postgres run.
set -euo pipefail
COUNT=${COUNT:-5000}
CONNECTIONS=${CONNECTIONS:-50}
CONTACTS=${CONTACTS:-1000}
BACKENDS=${BACKENDS:-sqlite postgres}
PORT=${PORT:-28025}
TOPIC="arn:aws:sns:us-east-1:123456789012:notify-ses"
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
cargo build --release --quiet
cargo build --release --quiet --example ses_load
notify="$repo/target/release/notify"
load="$repo/target/release/examples/ses_load"
work=$(mktemp -d)
server_pid=""
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
# shellcheck source=bench/common.sh
. "$repo/bench/common.sh"

contacts "$CONTACTS" "$work/contacts.csv"
tail -n +2 "$work/contacts.csv" | cut -d, -f4 > "$work/addresses.txt"

count_sql() { # count_sql DB_URL SQL
    case "$1" in
    sqlite://*) python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchone()[0])' "${1#sqlite://}" "$2" ;;
    postgres://*) psql -qtA "$1" -c "$2" ;;
    esac
}

for backend in $BACKENDS; do
    case "$backend" in
    sqlite) db="sqlite://$work/notify.db" ;;
    postgres)
        name="notify_bench_ses_$$"
        psql -q "postgres://postgres@127.0.0.1:5432/postgres" -c "DROP DATABASE IF EXISTS $name" -c "CREATE DATABASE $name"
        db="postgres://postgres@127.0.0.1:5432/$name" ;;
    esac
    export NOTIFY_CONFIG="$repo/notify.toml" NOTIFY_DATABASE_URL="$db" NOTIFY_CONTACTS="$work/contacts.csv" \
        NOTIFY_SNS_TOPIC_ARNS="$TOPIC" NOTIFY_SNS_CERTIFICATE_DIR="$repo/tests/fixtures/sns" NOTIFY_LOG=warn
    "$notify" contacts import "$work/contacts.csv" >/dev/null
    "$notify" serve --bind "127.0.0.1:$PORT" 2>"$work/serve.log" & server_pid=$!
    for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
    echo "== $backend: $COUNT signed notifications over $CONNECTIONS connections"
    "$load" "http://127.0.0.1:$PORT" "$work/addresses.txt" "$COUNT" "$CONNECTIONS" load
    echo "== $backend: the same $COUNT again (SNS retries)"
    "$load" "http://127.0.0.1:$PORT" "$work/addresses.txt" "$COUNT" "$CONNECTIONS" load
    rss=$(awk '/VmHWM/ {print $2}' "/proc/$server_pid/status")
    kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""
    sources=$(count_sql "$db" "SELECT COUNT(*) FROM bounce_sources WHERE source_key LIKE 'sns:%'")
    bounces=$(count_sql "$db" "SELECT COUNT(*) FROM bounces")
    echo "== $backend: server peak RSS ${rss} kB; sources recorded $sources, bounces recorded $bounces (expected $COUNT each)"
    [ "$sources" = "$COUNT" ] && [ "$bounces" = "$COUNT" ] || { echo "FAIL: not exactly once" >&2; exit 1; }
    [ "$backend" = postgres ] && psql -q "postgres://postgres@127.0.0.1:5432/postgres" -c "DROP DATABASE $name"
done
