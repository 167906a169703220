#!/usr/bin/env bash
# The cost curve as the audience grows (issue 15): for each database and each audience size, the
# time and peak RSS of
#   import   `notify contacts import` of a fresh export into an empty database,
#   smtp     `notify release-notes v3.12.0` to Postfix's smtp-sink on loopback (CONNECTIONS),
#   outbox   `notify maintenance-end` written to the outbox (no SMTP server),
#   rerun    `notify release-notes v3.12.0` again: the export unchanged, nothing left to send,
# and the lines each run wrote to standard error (issue 15: none at the default log level).
#
#   bash bench/scale.sh                          # SIZES="10000 100000 1000000" BACKENDS="sqlite postgres"
#   SIZES="10000 100000" BACKENDS=sqlite bash bench/scale.sh
#
# Needs: cargo, Postfix's smtp-sink (apt-get install postfix), GNU time (/usr/bin/time), python3,
# bc, and for BACKENDS=postgres psql and a PostgreSQL server at PGURL (default
# postgres://postgres@127.0.0.1:5432, trust auth; the database notify_scale is dropped and
# created for each size). Talks to 127.0.0.1 only. Scratch files (exports, SQLite files, the
# outbox: about 5 KB a contact) go under WORK (default: a new folder in /tmp, deleted at the end).
set -euo pipefail
SIZES=${SIZES:-"10000 100000 1000000"}
BACKENDS=${BACKENDS:-"sqlite postgres"}
CONNECTIONS=${CONNECTIONS:-10}
PORT=${PORT:-27126}
PGURL=${PGURL:-postgres://postgres@127.0.0.1:5432}
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
cargo build --release --quiet --bin notify
notify="$repo/target/release/notify"
work=${WORK:-$(mktemp -d)}
mkdir -p "$work"
chmod 777 "$work"
sink_pid=""
cleanup() {
    [ -n "$sink_pid" ] && kill "$sink_pid" 2>/dev/null
    [ -z "${WORK:-}" ] && rm -rf "$work"
    return 0
}
trap cleanup EXIT

# shellcheck source=bench/common.sh
. "$repo/bench/common.sh"
now() { date +%s.%N; }

# step NAME DB_URL CSV OUTBOX SMTP_URL ARGS...: run notify, print one table row.
step() {
    local name=$1 url=$2 csv=$3 outbox=$4 smtp=$5 n=$6
    shift 6
    local t0 t1 code=0
    t0=$(now)
    NOTIFY_CONFIG="$repo/notify.toml" NOTIFY_CONTACTS="$csv" NOTIFY_DATABASE_URL="$url" \
        NOTIFY_OUTBOX="$outbox" NOTIFY_SMTP_URL="$smtp" \
        /usr/bin/time -f "%M" -o "$work/time.txt" "$notify" "$@" \
        >"$work/out.txt" 2>"$work/err.txt" || code=$?
    t1=$(now)
    if [ "$code" != 0 ]; then
        echo "scale: $name failed (exit $code):" >&2
        cat "$work/out.txt" "$work/err.txt" >&2
        exit 1
    fi
    local secs rss sent rate stderr_lines
    secs=$(echo "$t1 - $t0" | bc -l)
    rss=$(($(cat "$work/time.txt") / 1024))
    sent=$(grep -oE '[0-9]+ (sent|written),' "$work/out.txt" | head -n1 | cut -d' ' -f1 || true)
    sent=${sent:-0}
    rate=$(echo "$sent / $secs" | bc -l)
    # The contacts sync's own line and the command's warnings about the release are output,
    # not logs; a log line from tracing carries a timestamp (after colour codes, if any).
    stderr_lines=$(grep -cE '[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z' "$work/err.txt" || true)
    printf '| %s | %s | %s | %.2f | %d | %s | %.0f | %s |\n' \
        "$backend" "$n" "$name" "$secs" "$rss" "$sent" "$rate" "$stderr_lines"
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB; $(rustc -V); $(date -u)"
start_sink
echo
echo "| database | contacts | step | seconds | peak RSS MB | sent or written | messages/s | log lines |"
echo "|---|---:|---|---:|---:|---:|---:|---:|"
for n in $SIZES; do
    csv="$work/contacts-$n.csv"
    [ -s "$csv" ] || contacts "$n" "$csv"
    for backend in $BACKENDS; do
        case $backend in
            sqlite)
                rm -f "$work/scale.db" "$work/scale.db-wal" "$work/scale.db-shm"
                url="sqlite://$work/scale.db"
                ;;
            postgres)
                psql -q "$PGURL/postgres" -c "DROP DATABASE IF EXISTS notify_scale" \
                    -c "CREATE DATABASE notify_scale" >/dev/null
                url="$PGURL/notify_scale"
                ;;
            *)
                echo "scale: unknown backend $backend (sqlite or postgres)" >&2
                exit 2
                ;;
        esac
        rm -rf "$work/outbox"
        mkdir -p "$work/outbox"
        step import "$url" "$csv" "$work/outbox" "" "$n" contacts import "$csv"
        step smtp "$url" "$csv" "$work/outbox" "smtp://127.0.0.1:$PORT" "$n" \
            release-notes v3.12.0 --concurrency "$CONNECTIONS"
        step outbox "$url" "$csv" "$work/outbox" "" "$n" maintenance-end
        step rerun "$url" "$csv" "$work/outbox" "smtp://127.0.0.1:$PORT" "$n" \
            release-notes v3.12.0 --concurrency "$CONNECTIONS"
        rm -rf "$work/outbox"
    done
done
