#!/usr/bin/env bash
# Honest errors: no descriptor kept per finished exec; output the spool could not keep
# reads as EIO with the real cause in `error` (never an empty or short output with a
# clean EOF); output dropped beyond the cap is reported only to a reader that missed
# it; a ctl line too long to hold fails its write(2) with EINVAL, not a short count.
. "$(dirname "$0")/lib.sh"
it_start

daemon_fds() { ls "/proc/${IT_MOUNT_PID[$MNT]}/fd" | wc -l; }

# one_write FILE BYTES [NEWLINE]: a single write(2) of BYTES bytes ("exec echo aaa...")
# to FILE; prints the count written or the error's name.
one_write() {
    "$IT_PY" - "$@" <<'EOF'
import errno, os, sys
path, size = sys.argv[1], int(sys.argv[2])
nl = b"\n" if len(sys.argv) > 3 else b""
data = b"exec echo " + b"a" * (size - 10 - len(nl)) + nl
fd = os.open(path, os.O_WRONLY)
try:
    print(os.write(fd, data))
except OSError as e:
    print(errno.errorcode[e.errno])
try:
    os.close(fd)
except OSError as e:
    pass
EOF
}

case_long_ctl_line_in_one_write_is_einval() {
    mksb longline
    local got
    # 2 MiB without a newline, 600 KiB with one: each is one write(2), refused whole
    got=$(one_write "$SB/ctl" 2097152)
    assert_eq EINVAL "$got" "one 2 MiB write to ctl"
    got=$(one_write "$SB/ctl" 614400 nl)
    assert_eq EINVAL "$got" "one 600 KiB line to ctl"
    assert_contains "$(rd "$SB/error")" "longer than" "error after a long line"
    assert_eq 0 "$(ls "$SB/exec" | wc -l)" "execs after refused lines"
    # a long line that fits still runs
    got=$(one_write "$SB/ctl" 100000 nl)
    assert_eq 100000 "$got" "one 100 kB line to ctl"
    assert_eq 99990 "$(rd "$SB/exec/1/stdout" | wc -c)" "output of the 100 kB line"
}

case_finished_execs_hold_no_descriptors() {
    mksb fds
    local i before after
    for ((i = 0; i < 5; i++)); do ctl "$SB" "exec echo warm $i"; done
    rd "$SB/exec/5/exit" >/dev/null || exit 1
    before=$(daemon_fds)
    timeout "$(t 300)" bash -c 'for ((i = 1; i <= 1000; i++)); do
            echo "exec echo out \$\$ $i; echo err $i >&2" > "$1/ctl" || exit 1; done' _ "$SB" ||
        fail "1000 execs"
    assert_eq 0 "$(rd "$SB/exec/1005/exit")" "exit of the last exec"
    sleep 0.5
    after=$(daemon_fds)
    it_log "daemon descriptors: $before before 1000 execs, $after after"
    it_figure "descriptors before/after 1000 execs with output: $before/$after"
    assert_le "$after" $((before + 10)) "descriptors after 1000 execs"
    # their output is all still there
    assert_eq "err 1000" "$(rd "$SB/exec/1005/stderr")" "stderr of the last exec"
    assert_match "$(rd "$SB/exec/6/stdout")" '^out [0-9]+ 1$' "stdout of the first exec"
}

# With no descriptor left for a spool file, the command's output cannot be kept: its
# stdout is EIO and `error` gives the cause, never an empty output and status 0.
case_no_descriptor_left_is_a_clear_error() {
    mksb nofd
    local pid=${IT_MOUNT_PID[$MNT]} max err soft
    ctl "$SB" "exec echo warm"
    assert_file_eq "$SB/stdout" $'warm\n'
    # the command has started (its connection is made) when the limit comes: the lowest
    # free descriptor number becomes the limit, so no new one can be made
    ctl "$SB" "exec sleep 2; echo lost"
    max=0
    while [ -e "/proc/$pid/fd/$max" ]; do max=$((max + 1)); done
    soft=$(prlimit --pid "$pid" --nofile --output SOFT --noheadings) || fail "prlimit"
    prlimit --pid "$pid" --nofile="$max": || fail "prlimit"
    rd "$SB/exec/2/exit" >/dev/null
    prlimit --pid "$pid" --nofile="$soft": || fail "prlimit back"
    must_fail "Input/output error" cat "$SB/exec/2/stdout"
    err=$(rd "$SB/error") || exit 1
    it_log "error with no descriptor left: $err"
    assert_contains "$err" "Too many open files" "error with no descriptor left"
    assert_not_contains "$err" "spool full" "error with no descriptor left"
    # and afterwards everything works again
    ctl "$SB" "exec echo again"
    assert_file_eq "$SB/stdout" $'again\n'
}

# 40 MB of output into a 20 MiB spool: the part kept is readable, then EIO; `error`
# says the spool is full.
case_full_spool_reads_as_eio() {
    local d=$IT_WORK/smallspool m=$IT_WORK/msmall err
    mkdir -p "$d"
    mount -t tmpfs -o size=20m tmpfs "$d" || fail "tmpfs"
    it_mount "$m" "spool=$d"
    mksb full "$m"
    ctl "$SB" "exec head -c 40000000 /dev/zero; echo done"
    rd "$SB/exit" >/dev/null || exit 1
    must_fail "Input/output error" bash -c 'set -o pipefail; cat "$1" | wc -c' _ "$SB/stdout"
    timeout "$(t 30)" cat "$SB/stdout" >/dev/null 2>&1 && fail "cat of a stream that lost output exited 0"
    err=$(rd "$SB/error") || exit 1
    it_log "error after 40 MB into a 20 MiB spool: $err"
    assert_contains "$err" "spool full" "error after a full spool"
    IT_LOG_ALLOW='spool full' it_unmount "$m" || fail "unmount"
    umount "$d"
}

# A reader that keeps up with 300 MiB of output (more than the 256 MiB kept) gets it
# all, and nobody is told of a loss; one that starts after the end misses the oldest
# bytes: it gets EIO at the end, and `error` says so once.
case_dropped_output_reported_only_when_missed() {
    mksb big
    local got err warnings
    ctl "$SB" "exec head -c 314572800 /dev/zero"
    got=$(timeout "$(t 120)" cat "$SB/exec/1/stdout" | wc -c)
    assert_eq 314572800 "$got" "bytes read by a reader that kept up"
    rd "$SB/exit" >/dev/null || exit 1
    assert_eq "" "$(rd "$SB/error")" "error after a reader that kept up"
    # a late reader: EIO after the kept bytes
    must_fail "Input/output error" bash -c 'cat "$1" >/dev/null' _ "$SB/exec/1/stdout"
    err=$(rd "$SB/error") || exit 1
    it_log "error after a late reader: $err"
    assert_contains "$err" "missed" "error after a late reader"
    must_fail "Input/output error" bash -c 'cat "$1" >/dev/null' _ "$SB/exec/1/stdout"
    warnings=$(grep -c 'big: .*missed\|big: .*dropped' "${IT_MOUNT_LOG[$MNT]}")
    assert_eq 1 "$warnings" "log lines about dropped output"
}

# An exec whose answer never comes (held back by the proxy) is not "failed": the write
# that started it fails with ETIMEDOUT, `error` says the outcome is unknown and the
# command may have run, and it is never sent again (it ran once).
case_unanswered_exec_is_unknown_not_failed() {
    local d=$IT_WORK/hold m=$IT_WORK/mhold err st
    it_fault_proxy "$d" hold-exec 1
    it_mount "$m" "" "$FAULT_URL"
    mksb held "$m"
    ctl "$SB" start
    calls_mark
    ctl_fails "Connection timed out" "$SB" "exec echo x >> /tmp/ran"
    grep -q 'answer held back' "$d/log" || fail "the proxy held no answer: $(cat "$d/log")"
    err=$(rd "$SB/error") || exit 1
    it_log "error after an unanswered exec: $err"
    assert_contains "$err" "outcome unknown" "error after an unanswered exec"
    assert_contains "$err" "may have run" "error after an unanswered exec"
    st=$(rd "$SB/exec/1/status") || exit 1
    assert_contains "$st" "outcome unknown" "exec/1/status"
    assert_eq 1 "$(calls_since StreamExec)" "StreamExec calls for one unanswered exec"
    # it did run, once
    ctl "$SB" "exec cat /tmp/ran"
    assert_file_eq "$SB/exec/2/stdout" $'x\n'
    ctl "$SB" "stop 0"
    IT_LOG_ALLOW='.' it_unmount "$m" || fail "unmount"
    kill "$FAULT_PID"
}

# bg_mount MNT OPTIONS: cwsfs in the background (no -f); its stderr in $MNT.err.
bg_mount() {
    mkdir -p "$1"
    "$CWSFS_BIN" "$1" -o "endpoint=$IT_URL,tags=$IT_TAG,$2" 2>"$1.err" </dev/null ||
        fail "background mount failed: $(cat "$1.err")"
    mountpoint -q "$1" || fail "$1 not mounted"
}
bg_unmount() {
    local i
    must fusermount3 -u "$1"
    # the daemon ends after the unmount (found by its own mountpoint in its arguments)
    for ((i = 0; i < 100; i++)); do
        pgrep -f -- "$CWSFS_BIN $1 " >/dev/null || return 0
        sleep 0.1
    done
    fail "the background daemon of $1 did not end"
}

# A background mount with no syslog socket does not drop its log: logfile= takes it,
# and without it the daemon says at start where its log goes.
case_background_log_goes_somewhere() {
    [ -S /dev/log ] && { it_log "a syslog socket exists: the default case is not testable here"; }
    local m=$IT_WORK/mbg log=$IT_WORK/bg.log run=$IT_WORK/run
    bg_mount "$m" "logfile=$log"
    mksb logged "$m"
    bg_unmount "$m"
    assert_contains "$(cat "$log")" "INFO mounted" "the log file"
    assert_contains "$(cat "$log")" "logged: made" "the log file"
    [ -S /dev/log ] && return 0
    mkdir -p "$run"
    XDG_RUNTIME_DIR=$run bg_mount "$m" ""
    it_log "background mount without syslog says: $(cat "$m.err")"
    assert_contains "$(cat "$m.err")" "the log goes to $run/cwsfs.log" "stderr at start"
    mksb logged2 "$m"
    bg_unmount "$m"
    assert_contains "$(cat "$run/cwsfs.log")" "logged2: made" "the default log file"
}

# `status` follows the service: a sandbox the service ended at its lifetime shows its
# end at the first read, not the state this mount last saw.
case_status_follows_the_service() {
    local st
    mksb short
    ctl "$SB" "lifetime 2" start
    assert_eq running "$(it_status "$SB")" "status after start"
    sleep 4 # nothing of this mount looks meanwhile; the service ends it at 2 s
    st=$(it_status "$SB")
    it_log "status 4 s after a 2 s lifetime: $st"
    case $st in
    terminated | completed* | failed*) ;;
    *) fail "status of a sandbox the service ended reads '$st'" ;;
    esac
}

# While the service cannot be reached, `status` reads `unknown` and `error` says why;
# when it answers again, `status` is its word again.
case_status_unknown_while_unreachable() {
    local d=$IT_WORK/unreach m=$IT_WORK/munreach sb err
    it_fault_proxy "$d" black-hole "$d/on"
    it_mount "$m" "timeout=2000" "$FAULT_URL"
    mksb far "$m"
    sb=$SB
    ctl "$sb" start || exit 1
    assert_eq running "$(it_status "$sb")" "status while the service answers"
    touch "$d/on"
    sleep 1.2 # the last answer is older than a second
    assert_eq unknown "$(timeout "$(t 30)" cat "$sb/status")" "status while the service is silent"
    err=$(rd "$sb/error") || exit 1
    it_log "error while the service is silent: $err"
    assert_contains "$err" "GetSandbox" "error while the service is silent"
    rm -f "$d/on"
    sleep 1.2
    assert_eq running "$(timeout "$(t 30)" cat "$sb/status")" "status once the service answers again"
    ctl "$sb" "stop 0"
    IT_LOG_ALLOW='.' it_unmount "$m" || fail "unmount"
    kill "$FAULT_PID"
}

it_case case_long_ctl_line_in_one_write_is_einval
it_case case_status_follows_the_service
it_case case_status_unknown_while_unreachable
it_case case_background_log_goes_somewhere
it_case case_unanswered_exec_is_unknown_not_failed
it_case case_finished_execs_hold_no_descriptors 400
it_case case_no_descriptor_left_is_a_clear_error
it_case case_full_spool_reads_as_eio
it_case case_dropped_output_reported_only_when_missed 300
IT_LOG_ALLOW='missed|longer than|Too many open files' it_done
