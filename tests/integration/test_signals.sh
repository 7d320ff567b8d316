#!/usr/bin/env bash
# Signals during blocked operations. A signal the program catches for its own
# bookkeeping and returns from (a shell's SIGCHLD of a finished background job,
# SIGWINCH) never fails the operation it interrupts: ctl `wait`, the `exit` read, a
# stream's open and read go on to their answer. A signal a person sent or one that ends
# the process (SIGINT and SIGTERM, caught or not, SIGKILL) ends the operation at once.
# Single calls are made by sigop.py through libc, so an EINTR is seen, not retried.
. "$(dirname "$0")/lib.sh"
it_start

mksb sig
S=$SB
ctl "$S" start || exit 1

sigop() { timeout "$(t 60)" "$IT_PY" "$IT_DIR/sigop.py" "$@" 2>/dev/null; }
# exec_bg LINE: start LINE in the sandbox; its exec directory in EX
EX=
exec_bg() {
    ctl "$S" "exec $1"
    EX=$S/exec/$(it_last_exec "$S") || fail "reading $S/ctl"
}
# ends_within SECONDS CMD...: CMD must end (any status) within SECONDS (scaled)
ends_within() {
    local limit=$1 t0
    shift
    t0=$(now_ms)
    (timeout -s KILL "$(t $((limit + 20)))" "$@" >/dev/null 2>&1; :) 2>/dev/null
    IT_MS=$(($(now_ms) - t0))
    [ "$IT_MS" -le $(($(t "$limit") * 1000)) ] || fail "$* took $IT_MS ms (bound ${limit}s)"
}

case_sigchld_during_ctl_wait() {
    mksb w1
    ctl "$SB" "command sleep 2" start
    assert_eq "ok 5" "$(sigop CHLD 0.3 write "$SB/ctl" wait)" "ctl wait through a SIGCHLD"
    mksb w2
    ctl "$SB" "command sleep 2" start
    # as the user meets it: bash's echo into ctl while a background job ends
    must bash -c 'sleep 0.3 & echo wait > "$1/ctl"' _ "$SB"
}

case_sigchld_during_start() {
    mksb st
    must bash -c 'sleep 0.05 & sleep 0.1 & echo start > "$1/ctl"' _ "$SB"
    assert_eq running "$(it_status "$SB")" "status after start"
}

case_bookkeeping_signals_during_exit_read() {
    exec_bg 'sleep 2'
    assert_eq "ok 0" "$(sigop CHLD 0.3 read "$EX/exit")" "exit read through a SIGCHLD"
    exec_bg 'sleep 2'
    assert_eq "ok 0" "$(sigop WINCH 0.3 read "$EX/exit")" "exit read through a SIGWINCH"
    exec_bg 'sleep 2'
    assert_eq "ok 0" "$(sigop URG 0.3 read "$EX/exit")" "exit read through a SIGURG"
}

# The open of a stream with no bytes yet waits for the first; then the read waits.
case_sigchld_during_stream_open_and_read() {
    exec_bg 'sleep 2; echo done'
    assert_eq "ok done" "$(sigop CHLD 0.3 read "$EX/stdout")" "stream open through a SIGCHLD"
    exec_bg 'echo first; sleep 2; echo second'
    wait_for 10 test -s "$EX/stdout"
    assert_eq "ok first" "$(sigop CHLD 0.3 read "$EX/stdout")" "stream read of what exists"
    must bash -c 'exec 3<"$1"; read -r l <&3; sleep 0.3 & read -r l <&3; [ "$l" = second ]' _ "$EX/stdout"
}

# SIGINT and SIGTERM stop the call even when the program catches them: the user or the
# system meant to stop it (scripts trap INT to clean up).
case_caught_sigint_sigterm_cancel() {
    exec_bg 'sleep 60'
    ends_within 10 "$IT_PY" "$IT_DIR/sigop.py" INT 0.5 read "$EX/exit"
    assert_le 400 "$IT_MS" "the exit read blocked before SIGINT"
    assert_eq "error EINTR" "$(sigop INT 0.5 read "$EX/exit")" "exit read with SIGINT caught"
    assert_eq "error EINTR" "$(sigop TERM 0.5 read "$EX/exit")" "exit read with SIGTERM caught"
    assert_eq "error EINTR" "$(sigop HUP 0.5 read "$EX/stdout")" "stream open with SIGHUP caught"
    mksb w3
    ctl "$SB" "command sleep 60" start
    assert_eq "error EINTR" "$(sigop INT 0.5 write "$SB/ctl" wait)" "ctl wait with SIGINT caught"
}

case_fatal_signals_end_blocked_calls() {
    exec_bg 'sleep 60'
    ends_within 10 timeout -s INT 1 cat "$EX/stdout"
    ends_within 10 timeout -s TERM 1 cat "$EX/exit"
    ends_within 10 timeout -s KILL 1 cat "$EX/stdout"
    ends_within 10 "$IT_PY" "$IT_DIR/sigop.py" -ALRM 0.5 read "$EX/exit"
    sigint_ends "cat of a stream" cat "$EX/stdout"
}

# The kernel sends one interrupt per request: a request that went on past a SIGCHLD
# must still end when SIGINT or SIGKILL comes later.
case_stop_signal_after_sigchld() {
    mksb w5
    ctl "$SB" "command sleep 60" start
    assert_eq "error EINTR" "$(sigop CHLD,INT 0.5 write "$SB/ctl" wait)" "ctl wait: SIGCHLD, then SIGINT"
    exec_bg 'sleep 60'
    ends_within 10 "$IT_PY" "$IT_DIR/sigop.py" CHLD,INT 0.5 read "$EX/exit"
    assert_le 900 "$IT_MS" "the exit read went on past the SIGCHLD"
    local pid t0
    "$IT_PY" "$IT_DIR/sigop.py" CHLD 0.3 read "$EX/stdout" >/dev/null 2>&1 &
    pid=$!
    disown $pid # no "Killed" notice
    sleep 1
    kill -0 $pid 2>/dev/null || fail "the stream open did not go on past the SIGCHLD"
    t0=$(now_ms)
    kill -KILL $pid
    wait_for 10 bash -c '! kill -0 "$1" 2>/dev/null' _ $pid
    it_log "SIGKILL after SIGCHLD ended the open in $(($(now_ms) - t0)) ms"
}

# Opening a sandbox's file to change it fetches it whole (100 MiB: seconds): a SIGCHLD
# lets the open go on, SIGINT ends it at once (the fetch is cancelled). Opened to read,
# it is fetched as it is read (test_reads.sh): the open does not wait.
case_open_of_sandbox_file() {
    run_in "$S" 'mkdir -p /it && yes sandbox-file | head -c 100M > /it/big' >/dev/null || exit 1
    local got
    got=$(sigop CHLD 0.3 update "$S/root/it/big")
    assert_eq "ok sandbox-file" "${got%%$'\n'*}" "open of a big file through a SIGCHLD"
    assert_eq "error EINTR" "$(sigop INT 0.3 update "$S/root/it/big")" "open of a big file with SIGINT caught"
    got=$(sigop CHLD 0.3 read "$S/root/it/big")
    assert_eq "ok sandbox-file" "${got%%$'\n'*}" "read-only open of a big file through a SIGCHLD"
    ends_within 10 timeout -s INT 1 cat "$S/root/it/big"
    ends_within 10 timeout -s KILL 1 cat "$S/root/it/big"
    # the file is still whole and readable afterwards
    assert_eq 104857600 "$(timeout "$(t 60)" cat "$S/root/it/big" | wc -c)" "size read after the interrupted opens"
}

# A service that stopped answering (the proxy swallows every new request): each
# operation that waits on it blocks, and SIGINT or SIGKILL ends it at once, for every
# kind of operation: lookup, getattr, readdir, open, rename, setattr, unlink, mkdir,
# the mount's listing and rmdir of a sandbox.
case_signals_end_operations_on_a_silent_service() {
    local d=$IT_WORK/hole m=$IT_WORK/mhole m2=$IT_WORK/mdirect sb i
    it_fault_proxy "$d" black-hole "$d/on"
    it_mount "$m" "timeout=3000" "$FAULT_URL"
    mksb bh "$m"
    sb=$SB
    ctl "$sb" start || exit 1
    # directories never listed through the mount: each operation needs a new listing
    run_in "$sb" 'for i in 1 2 3 4 5 6 7 8 9; do mkdir -p /h$i && echo x > /h$i/f; done' >/dev/null
    touch "$d/on"
    blocked_then_killed() { # SIGNAL CMD...: blocks on the service, then the signal ends it
        local sig=$1
        shift
        ends_within 10 timeout -s "$sig" 1 "$@"
        assert_le 900 "$IT_MS" "$* blocked until SIGKILL/SIGINT"
        it_log "$* ended by SIG$sig after $IT_MS ms"
    }
    blocked_then_killed KILL stat "$sb/root/h1/f"
    blocked_then_killed INT ls "$sb/root/h2"
    blocked_then_killed KILL cat "$sb/root/h3/f"
    blocked_then_killed KILL mv "$sb/root/h4/f" "$sb/root/h4/g"
    blocked_then_killed INT chmod 600 "$sb/root/h5/f"
    blocked_then_killed KILL rm "$sb/root/h6/f"
    blocked_then_killed KILL mkdir "$sb/root/h7/new"
    rm -f "$d/on"
    # The service answers again, and so does the mount at once: a listing whose waiters
    # all gave up is asked again, not waited out. Nothing the killed operations asked
    # for reached the sandbox.
    for ((i = 1; i <= 9; i++)); do
        assert_eq x "$(timeout 20 cat "$sb/root/h$i/f")" "/h$i/f after the stall"
    done
    touch "$d/on"
    # timeout=3000 is the whole call's deadline, retries included: the mount's listing
    # gives up after 3 s (and lists what the mount knows), not after six attempts
    ends_within 10 ls "$m"
    assert_le 2500 "$IT_MS" "ls of the mount waited for its listing"
    it_log "ls of the mount gave up on a silent service after $IT_MS ms (timeout=3000)"
    blocked_then_killed KILL rmdir "$sb"
    blocked_then_killed INT ls "$m" # a second after the last listing: a new one
    grep -q swallowed "$d/log" || fail "the proxy swallowed nothing: $(cat "$d/log")"
    rm -f "$d/on"
    # the stop the killed rmdir started never reached the service
    it_mount "$m2"
    assert_eq running "$(it_status "$m2/bh")" "status after the killed rmdir"
    it_unmount "$m2" || fail "unmount $m2"
    IT_LOG_ALLOW='.' it_unmount "$m" || fail "unmount"
    kill "$FAULT_PID"
}

it_case case_sigchld_during_ctl_wait
it_case case_sigchld_during_start
it_case case_bookkeeping_signals_during_exit_read
it_case case_sigchld_during_stream_open_and_read
it_case case_caught_sigint_sigterm_cancel
it_case case_fatal_signals_end_blocked_calls
it_case case_stop_signal_after_sigchld
it_case case_open_of_sandbox_file
it_case case_signals_end_operations_on_a_silent_service
it_done
