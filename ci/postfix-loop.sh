#!/usr/bin/env bash
# The real bounce loop, against Debian's Postfix on this machine (run as root, by .ci/run):
#   notify sends a notice to five contacts, two of whom have no mailbox; Postfix accepts all five
#   at SMTP time (local_recipient_maps is empty), delivers three, and returns two DSNs to the VERP
#   envelope sender, which lands in the `bounces` user's Maildir. notify imports that Maildir
#   (twice: the second import changes nothing), the review flags exactly those two contacts,
#   and the next notice skips them. Then Postfix is switched to reject unknown users at RCPT
#   (550), and a 5xx at send time must flag the contact as well.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
notify="$repo/target/debug/notify"
domain=notify-ci.test
fail() { echo "postfix-loop: FAIL: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "must run as root (it configures Postfix and adds users)"
command -v postfix >/dev/null || fail "Postfix is not installed (apt-get install postfix)"
[ -x "$notify" ] || fail "build notify first (cargo build)"

postconf -e "myhostname = mx.$domain" "mydomain = $domain" "myorigin = $domain" \
    "mydestination = $domain, localhost" "home_mailbox = Maildir/" \
    "inet_interfaces = loopback-only" "inet_protocols = ipv4" "recipient_delimiter = +" \
    "local_recipient_maps =" "smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination" \
    "mynetworks = 127.0.0.0/8" "biff = no" "delay_warning_time = 0"
for u in bounces alice bob carol dave; do
    id "$u" >/dev/null 2>&1 || useradd -m "$u"
    rm -rf "/home/$u/Maildir"
done
newaliases
if postfix status >/dev/null 2>&1; then postfix reload; else postfix start; fi
for _ in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/25) 2>/dev/null && break; sleep 0.2; done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/contacts.csv" <<CSV
user_id,first_name,last_name,email,title,workgroup,roles,is_coa_staff,is_deleted,is_user_group_member,note,date_added,last_seen_date
1,Alice,Ames,alice@$domain,Planner,Signs & Markings,"[""moped-editor""]",false,false,true,,,
2,Bob,Burns,bob@$domain,Engineer,Arterial Management,"[""moped-editor""]",false,false,true,,,
3,Carol,Cruz,carol@$domain,Analyst,Data & Technology Services,"[""moped-viewer""]",false,false,true,,,
4,Gus,Gone,ghost.one@$domain,Former staff,Signs & Markings,"[""moped-viewer""]",false,false,true,,,
5,Gwen,Gone,ghost.two@$domain,Former staff,Urban Trails,"[""moped-editor""]",false,false,true,,,
CSV
export NOTIFY_CONFIG="$repo/notify.toml" NOTIFY_CONTACTS="$work/contacts.csv" \
    NOTIFY_DATABASE_URL="sqlite://$work/notify.db" NOTIFY_SMTP_URL="smtp://127.0.0.1:25" \
    NOTIFY_BOUNCE_ADDRESS="bounces@$domain" NOTIFY_FROM="Moped CI <moped@$domain>" \
    NOTIFY_REPLY_TO="moped@$domain" NOTIFY_OUTBOX="$work/outbox"
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }

echo "postfix-loop: sending the release notes through Postfix"
sent=$("$notify" release-notes v3.12.0 --format json | json 'd["sent"]')
[ "$sent" = 5 ] || fail "expected 5 accepted at SMTP time, got $sent"

echo "postfix-loop: waiting for Postfix's own bounces"
for _ in $(seq 1 120); do
    # The Maildir does not exist until the first DSN arrives: find fails then, and under
    # `set -o pipefail` that failure must not end the script (it did on a slow machine).
    n=$( (find /home/bounces/Maildir/new -type f 2>/dev/null || true) | wc -l)
    [ "$n" -ge 2 ] && break
    sleep 0.5
done
[ "${n:-0}" -ge 2 ] || { postqueue -p || true; tail -n 30 /var/log/mail.log 2>/dev/null || true; fail "no DSNs arrived"; }
sleep 1
for u in alice bob carol; do
    [ "$( (find /home/$u/Maildir/new -type f 2>/dev/null || true) | wc -l)" = 1 ] || fail "$u should have exactly one message"
done

first=$("$notify" bounces import /home/bounces/Maildir --format json)
echo "postfix-loop: first import: $first"
[ "$(echo "$first" | json 'd["bounces"]')" = 2 ] || fail "expected 2 bounces recorded"
[ "$(echo "$first" | json 'd["unmatched"]')" = 0 ] || fail "every bounce must match a contact"
second=$("$notify" bounces import /home/bounces/Maildir --format json)
[ "$(echo "$second" | json 'd["bounces"]')" = 0 ] || fail "a second import must record nothing"
[ "$(echo "$second" | json 'd["already_imported"]')" = 2 ] || fail "a second import must see 2 known messages"

flagged=$("$notify" bounces report --format json | json '",".join(sorted(r["email"] for r in d))')
[ "$flagged" = "ghost.one@$domain,ghost.two@$domain" ] || fail "report flags [$flagged]"
"$notify" bounces report

summary=$("$notify" maintenance-end --format json)
[ "$(echo "$summary" | json 'd["skipped"]')" = 2 ] || fail "the next notice must skip the 2 flagged contacts: $summary"
[ "$(echo "$summary" | json 'd["sent"]')" = 3 ] || fail "the next notice must reach the other 3: $summary"

echo "postfix-loop: now Postfix rejects unknown users at RCPT time"
postconf -X local_recipient_maps
postfix reload
sleep 1
cat >> "$work/contacts.csv" <<CSV
6,Hal,Hollow,ghost.three@$domain,Former staff,Vision Zero,"[""moped-viewer""]",false,false,true,,,
CSV
summary=$("$notify" maintenance-start --until 23:59 --format json)
[ "$(echo "$summary" | json 'd["failed"]')" = 1 ] || fail "the 550 at RCPT must fail one recipient: $summary"
flagged=$("$notify" bounces report --format json | json '",".join(sorted(r["email"] for r in d))')
[ "$flagged" = "ghost.one@$domain,ghost.three@$domain,ghost.two@$domain" ] || fail "report after 550: [$flagged]"

postconf -e "local_recipient_maps ="
postfix reload
echo "postfix-loop: 2 passed, 0 failed"
