#!/usr/bin/env bash
# The bundled backend as a long-lived service private to the user: a mount with no
# endpoint and no credentials starts it detached at its socket (0600 in a 0700
# directory), unmount leaves it and its sandboxes running, a remount lists them,
# -o cleanup stops only the mount's own, two mounts at once start one backend, an
# idle backend exits by itself, SIGTERM exits 0 and removes the socket, a socket path
# too long is an error (never TCP). Everything runs at a private CWSB_SOCKET under
# this file's work directory (lib.sh), never at the machine's well-known socket.
. "$(dirname "$0")/lib.sh"

[ -x "$CWSFS_BIN" ] || { echo "FAIL: $CWSFS_BIN is not an executable (set CWSFS_BIN)"; exit 1; }
[ "$(id -u)" = 0 ] || { echo "FAIL: the local backend needs root"; exit 1; }
trap _it_cleanup EXIT
trap 'exit 130' INT TERM
IT_TAG="it-backend-private-$$-$RANDOM" # (lib.sh reads it)
export IT_TAG
PB_DIR=${CWSB_SOCKET%/*}

pb_pid() { cat "$PB_DIR/backend.pid" 2>/dev/null; }
# sb_state ID: the sandbox's state as the backend says (GetSandbox over its socket)
sb_state() {
    curl -s --max-time 10 --unix-socket "$CWSB_SOCKET" -H 'content-type: application/json' \
        -d "{\"sandboxId\":\"$1\"}" http://localhost/coreweave.sandbox.v1.SandboxService/GetSandbox |
        grep -o '"state":"[A-Z_]*"' | head -n 1 | cut -d'"' -f4
}
# backends running for this file's socket (by their environment)
pb_count() {
    local p n=0
    for p in /proc/[0-9]*; do
        tr '\0' '\n' <"$p/cmdline" 2>/dev/null | grep -q 'server\.js$' || continue
        tr '\0' '\n' <"$p/environ" 2>/dev/null | grep -qx "CWSB_SOCKET=$CWSB_SOCKET" && n=$((n + 1))
    done
    echo $n
}
gone_within() { # PID SECONDS
    local i
    for ((i = 0; i < $2 * 10 * IT_SCALE; i++)); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.1
    done
    return 1
}

# Mount, start a sandbox, unmount: the backend and the sandbox stay; a remount (no
# tags: every sandbox of this private backend) lists it, still running.
case_started_kept_and_relisted() {
    local m1=$IT_WORK/m1 m2=$IT_WORK/m2 pid id
    it_mount "$m1" notags none
    assert_contains "$(cat "$IT_LAST_LOG")" "started the local backend at unix:$CWSB_SOCKET" "what cwsfs says"
    assert_contains "$(cat "$IT_LAST_LOG")" "$PB_DIR/backend.log" "where the log is"
    pid=$(pb_pid)
    [ -n "$pid" ] && kill -0 "$pid" || fail "no backend pid file or no such process"
    [ -S "$CWSB_SOCKET" ] || fail "no socket at $CWSB_SOCKET"
    assert_eq 600 "$(stat -c %a "$CWSB_SOCKET")" "socket mode"
    assert_eq 700 "$(stat -c %a "$PB_DIR")" "socket directory mode"
    # detached: its own session, not a child of the mount's daemon
    assert_ne "${IT_MOUNT_PID[$m1]}" "$(ps -o ppid= -p "$pid" | tr -d ' ')" "the backend's parent"
    assert_eq "$pid" "$(ps -o sid= -p "$pid" | tr -d ' ')" "the backend's session"
    mkdir "$m1/a" || fail "mkdir"
    ctl "$m1/a" start
    assert_eq running "$(it_status "$m1/a")" "status"
    id=$(rd "$m1/a/id")
    it_unmount "$m1" || fail "unmount"
    sleep 1
    kill -0 "$pid" 2>/dev/null || fail "the backend stopped at unmount"
    assert_eq STATE_RUNNING "$(sb_state "$id")" "the sandbox after unmount"

    it_mount "$m2" notags none
    assert_contains "$(cat "$IT_LAST_LOG")" "using the local backend at unix:$CWSB_SOCKET" "what the remount says"
    assert_eq "$pid" "$(pb_pid)" "the remount's backend"
    assert_contains "$(ls "$m2")" a "ls after the remount"
    assert_eq "$id" "$(rd "$m2/a/id")" "the relisted sandbox's id"
    assert_eq running "$(it_status "$m2/a")" "status after the remount"
    run_in "$m2/a" 'echo still-here' >/dev/null
    it_unmount "$m2" || fail "unmount"
}

# -o cleanup stops the sandbox this mount made, not the one an earlier mount made.
case_cleanup_stops_only_its_own() {
    local m=$IT_WORK/mc idb ida
    it_mount "$m" notags,cleanup none
    assert_contains "$(ls "$m")" a "the earlier sandbox"
    ida=$(rd "$m/a/id")
    mkdir "$m/b" || fail "mkdir"
    ctl "$m/b" start
    idb=$(rd "$m/b/id")
    it_unmount "$m" || fail "unmount"
    assert_match "$(sb_state "$idb")" '^STATE_(TERMINATING|TERMINATED)$' "this mount's sandbox after -o cleanup"
    assert_eq STATE_RUNNING "$(sb_state "$ida")" "the earlier mount's sandbox after -o cleanup"
}

# SIGTERM to the backend: it exits (stopping its sandboxes) and removes its socket
# and pid file. Then two mounts at once start exactly one backend.
case_sigterm_then_two_mounts_one_backend() {
    local pid ma=$IT_WORK/ma mb=$IT_WORK/mb la lb
    pid=$(pb_pid)
    [ -n "$pid" ] || fail "no backend running"
    kill -TERM "$pid"
    gone_within "$pid" 15 || fail "the backend still runs 15 s after SIGTERM"
    [ -e "$CWSB_SOCKET" ] && fail "socket left after SIGTERM"
    [ -e "$PB_DIR/backend.pid" ] && fail "pid file left after SIGTERM"
    assert_contains "$(tail -20 "$PB_DIR/backend.log")" "SIGTERM: stopping every sandbox" "the backend's log"

    # (mounted by two subshells at once; their logs are cwsfs.<subshell pid>.*.log)
    printf '%s\n' "$IT_WORK"/cwsfs.*.log >"$IT_WORK/logs.before"
    it_mount_try "$ma" notags none &
    it_mount_try "$mb" notags none &
    wait
    mountpoint -q "$ma" && mountpoint -q "$mb" || fail "the two mounts did not both mount"
    printf '%s\n' "$IT_WORK"/cwsfs.*.log | grep -vxF -f "$IT_WORK/logs.before" >"$IT_WORK/logs.new"
    la=$(xargs cat <"$IT_WORK/logs.new" | grep -c 'started the local backend')
    lb=$(xargs cat <"$IT_WORK/logs.new" | grep -c 'using the local backend')
    assert_eq "1 1" "$la $lb" "mounts that started / found the backend"
    assert_eq 1 "$(pb_count)" "backends running for this socket"
    mkdir "$ma/x" || fail "mkdir"
    ctl "$ma/x" start
    # (a listing is refreshed at most once a second)
    wait_for 5 bash -c 'ls "$1" | grep -qx x' _ "$mb"
    ctl "$ma/x" stop
    must fusermount3 -u "$ma"
    must fusermount3 -u "$mb"
}

# -o backend_idle=2: the backend stays while a mount holds it, then exits by itself.
case_idle_exit() {
    local m=$IT_WORK/mi pid
    it_backend_private_stop || fail "the previous backend did not stop"
    it_mount "$m" notags,backend_idle=2 none
    pid=$(pb_pid)
    assert_contains "$(tr '\0' ' ' <"/proc/$pid/cmdline")" "--idle-exit 2" "the backend's command line"
    sleep 4
    kill -0 "$pid" 2>/dev/null || fail "the idle backend left under a mount"
    it_unmount "$m" || fail "unmount"
    gone_within "$pid" 10 || fail "the idle backend still runs 10 s after the unmount"
    [ -e "$CWSB_SOCKET" ] && fail "socket left after the idle exit"
    assert_contains "$(tail -5 "$PB_DIR/backend.log")" "idle for 2 s" "the backend's log"
}

# A log past 16 MiB moves to backend.log.1 when the next backend starts.
case_log_rotated_at_start() {
    local m=$IT_WORK/mr
    it_backend_private_stop || fail "the previous backend did not stop"
    mkdir -p "$PB_DIR" && chmod 700 "$PB_DIR"
    echo "an old line" >"$PB_DIR/backend.log"
    truncate -s 17M "$PB_DIR/backend.log"
    it_mount "$m" notags none
    assert_eq $((17 << 20)) "$(stat -c %s "$PB_DIR/backend.log.1")" "the old log kept as backend.log.1"
    [ "$(stat -c %s "$PB_DIR/backend.log")" -lt 1048576 ] || fail "backend.log was not started anew"
    assert_contains "$(cat "$PB_DIR/backend.log")" "listening on" "the new backend's log"
    it_unmount "$m" || fail "unmount"
    it_backend_private_stop || fail "the backend did not stop"
}

# Started by hand (a child here): exit status 0 on SIGTERM and after --idle-exit.
case_exit_status_by_hand() {
    local pid rc out=$IT_WORK/hand.out
    node "$IT_BACKEND/server.js" --quiet >"$out" 2>&1 &
    pid=$!
    wait_for 30 test -S "$CWSB_SOCKET"
    kill -TERM "$pid"
    wait "$pid"
    rc=$?
    assert_eq 0 "$rc" "exit status after SIGTERM"
    [ -e "$CWSB_SOCKET" ] && fail "socket left after SIGTERM"
    node "$IT_BACKEND/server.js" --quiet --idle-exit 1 >"$out" 2>&1 &
    pid=$!
    gone_within "$pid" 30 || { kill -KILL "$pid"; fail "--idle-exit 1 did not exit"; }
    wait "$pid"
    assert_eq 0 "$?" "exit status after --idle-exit"
}

# A socket path longer than a unix socket allows: a clear error, no backend, no TCP.
case_socket_path_too_long() {
    local m=$IT_WORK/ml long
    long=$IT_WORK/$(printf 'x%.0s' {1..120})/api.sock
    CWSB_SOCKET=$long it_mount_try "$m" notags none && fail "mounted with a socket path of ${#long} bytes"
    assert_contains "$(cat "$IT_LAST_LOG")" "longer than a unix socket can have" "the error"
    assert_not_contains "$(cat "$IT_LAST_LOG")" "http://" "the error"
    CWSB_SOCKET=$long must_fail "more than a unix socket can have" node "$IT_BACKEND/server.js"
    assert_not_contains "$IT_OUT" "listening on" "the backend's output"
}

it_case case_started_kept_and_relisted
it_case case_cleanup_stops_only_its_own
it_case case_sigterm_then_two_mounts_one_backend
it_case case_idle_exit
it_case case_log_rotated_at_start
it_case case_exit_status_by_hand
it_case case_socket_path_too_long
it_done
