# Shared by the benchmark scripts (sourced): a contacts export of N generated people, and
# Postfix's smtp-sink on 127.0.0.1:$PORT (its pid in sink_pid, for the caller's cleanup).

contacts() { # contacts N FILE
    python3 - "$1" "$2" <<'PY'
import sys
n, path = int(sys.argv[1]), sys.argv[2]
with open(path, "w") as f:
    f.write("user_id,first_name,last_name,email,title,workgroup,roles,is_coa_staff,is_deleted,is_user_group_member,note,date_added,last_seen_date\n")
    for i in range(1, n + 1):
        f.write(f'{i},First{i},Last{i},person{i:06}@example.org,Planner,Signs & Markings,"[""moped-editor""]",false,false,true,,,\n')
PY
}

start_sink() {
    local user=()
    [ "$(id -u)" = 0 ] && user=(-u nobody)
    smtp-sink "${user[@]}" 127.0.0.1:$PORT 1024 & sink_pid=$!
    for _ in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
}
