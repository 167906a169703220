#!/usr/bin/env bash
# Delivery benchmark (issue 4): notify against Postfix's smtp-sink on loopback, next to Postfix's
# own load generator smtp-source sending the same number of messages of the same size over the
# same number of connections; then peak memory at 100,000 recipients, and the rate limit.
#
#   bash bench/smtp.sh            # N=10000 CONNECTIONS=10 BIG=100000 RATE_N=600 RATE=50
#
# Needs: cargo, Postfix's smtp-sink and smtp-source (apt-get install postfix), GNU time
# (/usr/bin/time), python3. Talks to 127.0.0.1 only; everything runs in a scratch folder.
set -euo pipefail
N=${N:-10000}
CONNECTIONS=${CONNECTIONS:-10}
BIG=${BIG:-100000}
RATE_N=${RATE_N:-600}
RATE=${RATE:-50}
PORT=${PORT:-27125}
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
cargo build --release --quiet
notify="$repo/target/release/notify"
work=$(mktemp -d)
chmod 777 "$work"
sink_pid=""
cleanup() { [ -n "$sink_pid" ] && kill "$sink_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

# shellcheck source=bench/common.sh
. "$repo/bench/common.sh"
now() { date +%s.%N; }
run_notify() { # run_notify CSV DB ARGS... ; prints "seconds peak_kb"
    local csv=$1 db=$2; shift 2
    local t0 t1
    t0=$(now)
    NOTIFY_CONFIG="$repo/notify.toml" NOTIFY_CONTACTS="$csv" NOTIFY_DATABASE_URL="sqlite://$db" \
        NOTIFY_SMTP_URL="smtp://127.0.0.1:$PORT" /usr/bin/time -f "%M" -o "$work/time.txt" \
        "$notify" release-notes v3.12.0 "$@" >"$work/out.txt"
    t1=$(now)
    echo "$(echo "$t1 - $t0" | bc -l) $(cat "$work/time.txt")"
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB; $(rustc -V)"
start_sink

# The size of one personalised release-notes message, for smtp-source.
contacts 1 "$work/one.csv"
NOTIFY_CONFIG="$repo/notify.toml" NOTIFY_CONTACTS="$work/one.csv" NOTIFY_DATABASE_URL="sqlite://$work/one.db" \
    "$notify" release-notes v3.12.0 --dry-run --preview "$work/preview" >/dev/null
size=$(stat -c %s "$(ls "$work"/preview/*.eml | head -n1)")
echo "message size: $size bytes"

contacts "$N" "$work/n.csv"
read -r t_notify rss_notify < <(run_notify "$work/n.csv" "$work/n.db" --concurrency "$CONNECTIONS")
grep -q "$N sent" "$work/out.txt" || { cat "$work/out.txt"; echo "notify did not send $N" >&2; exit 1; }
t0=$(now)
smtp-source -d -s "$CONNECTIONS" -m "$N" -l "$size" -f bench@example.org -t sink@example.org 127.0.0.1:$PORT
t1=$(now)
t_source=$(echo "$t1 - $t0" | bc -l)
printf 'notify:       %d messages over %d connections in %.2f s = %.0f msg/s (peak RSS %d KB)\n' "$N" "$CONNECTIONS" "$t_notify" "$(echo "$N / $t_notify" | bc -l)" "$rss_notify"
printf 'smtp-source:  %d messages over %d connections in %.2f s = %.0f msg/s\n' "$N" "$CONNECTIONS" "$t_source" "$(echo "$N / $t_source" | bc -l)"
printf 'ratio notify/smtp-source: %.2f (target >= 0.5)\n' "$(echo "$t_source / $t_notify" | bc -l)"

contacts "$BIG" "$work/big.csv"
read -r t_big rss_big < <(run_notify "$work/big.csv" "$work/big.db" --concurrency "$CONNECTIONS")
grep -q "$BIG sent" "$work/out.txt" || { cat "$work/out.txt"; echo "notify did not send $BIG" >&2; exit 1; }
printf 'memory:       %d recipients in %.1f s = %.0f msg/s, peak RSS %.1f MB (target <= 64 MB)\n' "$BIG" "$t_big" "$(echo "$BIG / $t_big" | bc -l)" "$(echo "$rss_big / 1024" | bc -l)"

contacts "$RATE_N" "$work/rate.csv"
read -r t_rate _ < <(run_notify "$work/rate.csv" "$work/rate.db" --concurrency "$CONNECTIONS" --rate "$RATE")
expected=$(echo "$RATE_N / $RATE" | bc -l)
printf 'rate:         %d messages at %s/s in %.2f s (expected %.1f s, %+.1f%%)\n' "$RATE_N" "$RATE" "$t_rate" "$expected" "$(echo "($t_rate - $expected) * 100 / $expected" | bc -l)"
