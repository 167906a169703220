#!/usr/bin/env bash
# Bounce parsing speed from the command line (issue 14, item 4): `notify bounces parse --format
# json` over a folder of 5,000 message files, the vendored sisimai corpus
# (tests/fixtures/sisimai/mail/*.eml, 482 real bounces, auto-replies and feedback reports) repeated
# until there are COUNT files. Reports messages/s (counting files: COUNT per run) and MB/s (10^6
# bytes of the files) for each run and their median.
#
#   bash bench/parse.sh                     # COUNT=5000 RUNS=5 DIR=/tmp/notify-bench-parse
#   NOTIFY_BIN=/path/to/notify bash bench/parse.sh   # time another build (e.g. an older commit)
#   QUIET=1 bash bench/parse.sh             # start each timed run only when the machine is idle
#                                           # (other jobs under 8% of the CPUs for a second)
#
# Needs: cargo, bash, GNU time (/usr/bin/time, for the peak RSS). No network. The files are written under DIR (not the
# repository) and kept there for reruns; delete DIR when done. One untimed run comes first (it
# warms the page cache and checks the output: one JSON line per file, exit status 0).
set -euo pipefail
COUNT=${COUNT:-5000}
RUNS=${RUNS:-5}
DIR=${DIR:-/tmp/notify-bench-parse}
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
if [ -z "${NOTIFY_BIN:-}" ]; then
    cargo build --release --quiet --bin notify
    NOTIFY_BIN="$repo/target/release/notify"
fi
[ -x "$NOTIFY_BIN" ] || { echo "bench/parse.sh: $NOTIFY_BIN is not an executable" >&2; exit 2; }

# The folder: file N (from 00000) is a copy of corpus message N mod 482, in name order.
corpus=("$repo"/tests/fixtures/sisimai/mail/*.eml)
[ -e "${corpus[0]}" ] || { echo "bench/parse.sh: no corpus in tests/fixtures/sisimai/mail" >&2; exit 2; }
msgs="$DIR/messages"
stamp="$DIR/layout"
want="$COUNT files of ${#corpus[@]} at $(cat "${corpus[@]}" | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    rm -rf "$msgs"
    mkdir -p "$msgs"
    for ((i = 0; i < COUNT; i++)); do
        cp "${corpus[i % ${#corpus[@]}]}" "$msgs/$(printf '%05d' "$i").eml"
    done
    echo "$want" > "$stamp"
fi
bytes=$(cat "$msgs"/*.eml | wc -c)
echo "input:   $msgs: $COUNT files, $bytes bytes (the ${#corpus[@]} corpus messages repeated)"
echo "binary:  $NOTIFY_BIN"
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"

# Untimed run: the page cache is warm after it, and its output is checked.
out="$DIR/out.json"
/usr/bin/time -f '%M' -o "$DIR/rss.txt" \
    "$NOTIFY_BIN" bounces parse --format json "$msgs" > "$out" 2> "$DIR/err.txt" || {
    echo "bench/parse.sh: notify failed:" >&2; cat "$DIR/err.txt" >&2; exit 1; }
# One JSON line per message: a file that holds an mbox (one corpus file does, with two messages)
# gives one line per message in it, so there are a few more lines than files.
lines=$(wc -l < "$out")
[ "$lines" -ge "$COUNT" ] || { echo "bench/parse.sh: $lines JSON lines for $COUNT files" >&2; exit 1; }
[ ! -s "$DIR/err.txt" ] || { echo "bench/parse.sh: notify wrote to stderr:" >&2; cat "$DIR/err.txt" >&2; exit 1; }
echo "output:  $lines JSON lines, $(grep -o '"address"' "$out" | wc -l) bounces, sha256 $(sha256sum < "$out" | cut -c1-16), peak RSS $(cat "$DIR/rss.txt") kB"

# The measurement: exactly this command, RUNS times.
echo "command: $NOTIFY_BIN bounces parse --format json $msgs > /dev/null"
# Wait (at most 10 minutes) until other jobs use under 8% of the CPUs over one second.
quiet() {
    local a b busy total
    for _ in $(seq 1 600); do
        read -ra a < /proc/stat; sleep 1; read -ra b < /proc/stat
        busy=$(( (b[1] + b[2] + b[3] + b[6] + b[7] + b[8]) - (a[1] + a[2] + a[3] + a[6] + a[7] + a[8]) ))
        total=$(( busy + (b[4] + b[5]) - (a[4] + a[5]) ))
        [ $((busy * 100)) -lt $((total * 8)) ] && return 0
    done
    echo "bench/parse.sh: the machine was never idle for a second; timing anyway" >&2
}
rates=()
TIMEFORMAT='%3R %3U %3S'
for ((r = 1; r <= RUNS; r++)); do
    [ -z "${QUIET:-}" ] || quiet
    { time "$NOTIFY_BIN" bounces parse --format json "$msgs" > /dev/null 2> /dev/null; } 2> "$DIR/time.txt"
    read -r elapsed user sys < "$DIR/time.txt"
    rate=$(awk -v n="$COUNT" -v t="$elapsed" 'BEGIN { printf "%.0f", (t > 0 ? n / t : 0) }')
    mbs=$(awk -v b="$bytes" -v t="$elapsed" 'BEGIN { printf "%.1f", (t > 0 ? b / 1e6 / t : 0) }')
    cpu=$(awk -v u="$user" -v s="$sys" -v t="$elapsed" 'BEGIN { printf "%.0f", (t > 0 ? 100 * (u + s) / t : 0) }')
    printf 'run %d:   %6.3f s  %8d messages/s  %7s MB/s  CPU %s%% (user %s s, sys %s s)\n' \
        "$r" "$elapsed" "$rate" "$mbs" "$cpu" "$user" "$sys"
    rates+=("$elapsed")
done
median=$(printf '%s\n' "${rates[@]}" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
awk -v n="$COUNT" -v b="$bytes" -v t="$median" \
    'BEGIN { printf "median:  %.3f s  %.0f messages/s  %.1f MB/s\n", t, n / t, b / 1e6 / t }'
