#!/usr/bin/env bash
# Compare two builds of notify on the delivery benchmark, alternating them so that the machine's
# drift (other tenants of a VM) falls on both alike. Each run: a fresh SQLite database, N
# personalised release notes to Postfix's smtp-sink on loopback over CONNECTIONS connections.
#
#   bash bench/ab.sh OLD_BINARY NEW_BINARY     # N=10000 CONNECTIONS=10 ROUNDS=6
#
# Build the two binaries first, e.g. `git stash; cargo build --release; cp target/release/notify
# /tmp/notify-old; git stash pop; cargo build --release`. Needs smtp-sink (apt-get install
# postfix), GNU time (/usr/bin/time), python3.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: bash bench/ab.sh OLD_BINARY NEW_BINARY" >&2; exit 2; }
N=${N:-10000}
CONNECTIONS=${CONNECTIONS:-10}
ROUNDS=${ROUNDS:-6}
PORT=${PORT:-27126}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
chmod 777 "$work"
sink_pid=""
cleanup() { [ -n "$sink_pid" ] && kill "$sink_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
# shellcheck source=bench/common.sh
. "$repo/bench/common.sh"
contacts "$N" "$work/n.csv"
start_sink
one() { # one BINARY -> seconds
    rm -f "$work"/n.db*
    NOTIFY_CONFIG="$repo/notify.toml" NOTIFY_TEMPLATES="$repo/templates" NOTIFY_RELEASES="$repo/releases" \
        NOTIFY_CONTACTS="$work/n.csv" NOTIFY_DATABASE_URL="sqlite://$work/n.db" \
        NOTIFY_SMTP_URL="smtp://127.0.0.1:$PORT" /usr/bin/time -f "%e" -o "$work/t" \
        "$1" release-notes v3.12.0 --concurrency "$CONNECTIONS" >"$work/out.txt"
    grep -q "$N sent" "$work/out.txt" || { cat "$work/out.txt" >&2; echo "$1 did not send $N" >&2; exit 1; }
    cat "$work/t"
}
old=(); new=()
for _ in $(seq 1 "$ROUNDS"); do
    old+=("$(one "$1")")
    new+=("$(one "$2")")
done
mean() { printf '%s\n' "$@" | awk '{s+=$1} END {printf "%.3f", s/NR}'; }
echo "old: mean $(mean "${old[@]}") s over ${ROUNDS} runs: ${old[*]}"
echo "new: mean $(mean "${new[@]}") s over ${ROUNDS} runs: ${new[*]}"
