#!/usr/bin/env bash
# `logs` (the main command's output, StreamLogs follow) and `tail -f` on logs and on a
# running exec's stdout showing new output promptly.
. "$(dirname "$0")/lib.sh"
it_start

# tail_shows FILE TRIGGER_SANDBOX WANT: start `tail -f FILE`, wait for what is there to
# show, make the sandbox print WANT (touch /tmp/trigger), and measure how long tail
# takes to show it; the design promises new output within two seconds (bound 3 s).
tail_shows_new_output() {
    local file=$1 sb=$2 first=$3 want=$4 out pid t0 ms i
    out=$IT_WORK/tail.$RANDOM.out
    tail -f "$file" >"$out" 2>&1 &
    pid=$!
    for ((i = 0; i < 50 * IT_SCALE; i++)); do
        grep -q "$first" "$out" && break
        sleep 0.1
    done
    grep -q "$first" "$out" || { kill $pid; fail "tail -f $file did not show the output already there within 5 s: $(_it_show "$(cat "$out")")"; }
    run_in "$sb" 'touch /tmp/trigger' >/dev/null || exit 1
    t0=$(now_ms)
    for ((i = 0; i < 100 * IT_SCALE; i++)); do
        grep -q "$want" "$out" && break
        sleep 0.05
    done
    ms=$(($(now_ms) - t0))
    kill $pid 2>/dev/null
    wait $pid 2>/dev/null
    grep -q "$want" "$out" || fail "tail -f $file did not show new output within 5 s: $(_it_show "$(cat "$out")")"
    it_log "tail -f $(basename "$(dirname "$file")")/$(basename "$file") showed new output after $ms ms"
    [ $ms -le $((3000 * IT_SCALE)) ] || fail "tail -f $file showed new output after $ms ms (promised: within 2 s)"
}

WAITER='while [ ! -e /tmp/trigger ]; do sleep 0.1; done'

case_logs_of_main_command() {
    mksb mainlogs
    ctl "$SB" "command echo line1; echo err1 >&2; sleep 1; echo line2" start
    local l
    # streams while it runs, EOF at its end
    l=$(timeout "$(t 20)" cat "$SB/logs") || fail "cat logs did not end with the main command (rc $?)"
    assert_contains "$l" line1 "logs"
    assert_contains "$l" err1 "logs (stderr merged)"
    assert_contains "$l" line2 "logs"
    assert_eq line2 "$(printf '%s\n' "$l" | tail -n 1)" "last line of logs"
    # readable again after the end
    assert_eq "$l" "$(rd "$SB/logs")" "logs read again"
    # exec output never appears in logs
    mksb mainlogs2
    ctl "$SB" "command echo from-main; sleep 2" "exec echo from-exec"
    l=$(rd "$SB/logs") || exit 1
    assert_contains "$l" from-main "logs"
    assert_not_contains "$l" from-exec "logs"
}

case_logs_stream_before_end() {
    mksb earlylogs
    ctl "$SB" "command echo early; sleep 4; echo late" start
    local t0 first
    t0=$(now_ms)
    first=$(timeout "$(t 2)" head -n 1 "$SB/logs") || fail "no first line of logs within $(t 2) s (rc $?)"
    assert_eq early "$first" "first line of logs"
    it_log "first logs line after $(($(now_ms) - t0)) ms"
    assert_eq running "$(rd "$SB/status")" "status while logs stream"
}

case_tail_f_logs() {
    mksb taillogs
    ctl "$SB" "command echo ready; $WAITER; echo triggered; sleep 300" start
    # st_size is the number of bytes produced so far (tail -f relies on it)
    local i
    for ((i = 0; i < 50 * IT_SCALE; i++)); do
        [ -s "$SB/logs" ] && break
        sleep 0.1
    done
    [ -s "$SB/logs" ] || fail "st_size of logs still 0 5 s after the main command printed \"ready\""
    tail_shows_new_output "$SB/logs" "$SB" ready triggered
    ctl "$SB" "stop 0"
}

case_tail_f_exec_stdout() {
    mksb tailexec
    ctl "$SB" "exec echo ready; $WAITER; echo triggered; sleep 300"
    wait_for 10 test -s "$SB/exec/1/stdout"
    tail_shows_new_output "$SB/exec/1/stdout" "$SB" ready triggered
    # and tail -f on the stderr link too
    ctl "$SB" "exec rm -f /tmp/trigger; echo ready2 >&2; $WAITER; echo triggered2 >&2; sleep 300"
    wait_for 10 test -s "$SB/exec/3/stderr"
    tail_shows_new_output "$SB/stderr" "$SB" ready2 triggered2
}

# tail -f started before the command printed anything (st_size 0): new output must
# still show within two seconds.
case_tail_f_before_any_output() {
    mksb tailearly
    ctl "$SB" "exec $WAITER; echo triggered; sleep 300"
    local out pid i
    out=$IT_WORK/tailearly.out
    tail -f "$SB/exec/1/stdout" >"$out" 2>&1 &
    pid=$!
    sleep 1.5
    run_in "$SB" 'touch /tmp/trigger' >/dev/null || exit 1
    for ((i = 0; i < 60 * IT_SCALE; i++)); do
        grep -q triggered "$out" && break
        sleep 0.05
    done
    kill $pid 2>/dev/null
    wait $pid 2>/dev/null
    grep -q triggered "$out" || fail "tail -f of a then-empty stdout showed nothing 3 s after the command printed: $(_it_show "$(cat "$out")")"
}

case_stream_size_and_mtime_follow_output() {
    mksb sizes
    ctl "$SB" "exec echo 12345; $WAITER; echo 6789; sleep 300"
    wait_for 5 test -s "$SB/exec/1/stdout"
    local s1 m1 s2 m2
    s1=$(stat -c %s "$SB/exec/1/stdout")
    m1=$(stat -c %Y.%y "$SB/exec/1/stdout")
    assert_eq 6 "$s1" "st_size after the first line"
    sleep 1.1
    run_in "$SB" 'touch /tmp/trigger' >/dev/null || exit 1
    sleep 1.5 # attributes may lag by at most one second
    s2=$(stat -c %s "$SB/exec/1/stdout")
    m2=$(stat -c %Y.%y "$SB/exec/1/stdout")
    assert_eq 11 "$s2" "st_size after the second line"
    assert_ne "$m1" "$m2" "mtime after new output"
}

# A StreamLogs stream that breaks resumes where it stopped (logSessionId and offset):
# cut eight times while the main command prints, `logs` still holds every line once,
# in order (more breaks than the five in a row allowed, each after some output).
case_logs_resume_after_breaks() {
    local d=$IT_WORK/cut m=$IT_WORK/mcut want
    it_fault_proxy "$d" cut-logs 8
    it_mount "$m" "" "$FAULT_URL"
    mksb resumed "$m"
    ctl "$SB" 'command for i in $(seq 1 40); do echo line $i; sleep 0.25; done' start
    want=$(seq 1 40 | sed 's/^/line /')
    assert_eq "$want" "$(timeout "$(t 60)" cat "$SB/logs")" "logs through 8 breaks" || exit 1
    assert_eq 8 "$(grep -c ': cut ' "$d/log")" "breaks the proxy made"
    assert_eq "" "$(rd "$SB/error")" "error after the breaks"
    IT_LOG_ALLOW='logs stream broke' it_unmount "$m" || fail "unmount"
    kill "$FAULT_PID"
}

it_case case_logs_of_main_command
it_case case_logs_stream_before_end
it_case case_tail_f_logs
it_case case_tail_f_exec_stdout
it_case case_tail_f_before_any_output
it_case case_stream_size_and_mtime_follow_output
it_case case_logs_resume_after_breaks
it_done
