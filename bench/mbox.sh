#!/usr/bin/env bash
# Streaming mbox benchmark (issue 9): peak memory and time of `notify bounces parse` on a 1 GB
# mbox made of the bounce fixtures (tests/fixtures/bounces/*.eml, real-world shapes: Postfix,
# Exim, Exchange, Office 365, Gmail, SES, ...) repeated with `From ` separators, and on /dev/zero.
#
#   bash bench/mbox.sh            # SIZE_MB=1024 DIR=/tmp/notify-bench-mbox
#
# Needs: cargo, GNU time (/usr/bin/time). The mbox is written under DIR (not the repository) and
# kept there for reruns; delete it when done.
set -euo pipefail
SIZE_MB=${SIZE_MB:-1024}
DIR=${DIR:-/tmp/notify-bench-mbox}
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
cargo build --release --quiet
notify="$repo/target/release/notify"
mkdir -p "$DIR"
big="$DIR/big.mbox"
chunk="$DIR/chunk.mbox"

# One pass over the fixtures as an mbox: each message after a `From ` line, its own lines that
# begin with `From ` (or `>From `) quoted once more, a blank line after it.
: > "$chunk"
for f in "$repo"/tests/fixtures/bounces/*.eml; do
    printf 'From MAILER-DAEMON Mon Nov 30 06:00:00 2026\n' >> "$chunk"
    sed -e 's/^\(>*From \)/>\1/' -e '$a\' "$f" >> "$chunk"
    printf '\n' >> "$chunk"
done
target=$((SIZE_MB * 1024 * 1024))
if [ ! -f "$big" ] || [ "$(stat -c %s "$big")" -lt "$target" ]; then
    : > "$big"
    while [ "$(stat -c %s "$big")" -lt "$target" ]; do cat "$chunk" >> "$big"; done
fi
bytes=$(stat -c %s "$big")
messages=$(grep -c '^From MAILER-DAEMON' "$big")
echo "mbox: $big, $bytes bytes, $messages messages ($(ls "$repo"/tests/fixtures/bounces/*.eml | wc -l) fixtures repeated)"

report() { # report LABEL TIMEFILE
    local rss elapsed
    rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$2")
    elapsed=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$2")
    echo "$1: peak RSS $rss kB ($((rss / 1024)) MiB), elapsed $elapsed"
}

# The measurement: exactly this command.
/usr/bin/time -v -o "$DIR/time-parse.txt" "$notify" bounces parse --format json "$big" > /dev/null
report "bounces parse --format json (1 GB mbox)" "$DIR/time-parse.txt"
# Every message gave one JSON line (a second pass, not timed).
lines=$("$notify" bounces parse --format json "$big" | wc -l)
echo "JSON lines: $lines (messages: $messages)"
[ "$lines" = "$messages" ] || { echo "line count differs from message count" >&2; exit 1; }

# /dev/zero: not an mbox, read up to the 10 MiB limit and skipped.
/usr/bin/time -v -o "$DIR/time-zero.txt" "$notify" bounces parse --format json /dev/zero > /dev/null 2> "$DIR/zero.err"
report "bounces parse /dev/zero" "$DIR/time-zero.txt"
cat "$DIR/zero.err"
