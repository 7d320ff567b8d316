#!/usr/bin/env bash
# A sandbox's life through its files: mkdir makes it unstarted with no call, `start`
# creates it, `status`/`events` follow it to a terminal state, `stop`, `wait`, spec
# commands before start and EBUSY after, `spec` as JSON.
. "$(dirname "$0")/lib.sh"
it_start

json_ok() { python3 -c 'import json,sys; json.load(sys.stdin)'; }

case_mkdir_is_unstarted_without_calls() {
    calls_mark
    mksb lazy
    assert_file_eq "$SB/status" $'unstarted\n'
    assert_file_eq "$SB/id" ""
    ls -l "$SB" >/dev/null || fail "ls -l $SB"
    rd "$SB/spec" >/dev/null || fail "reading spec"
    rd "$SB/error" >/dev/null || fail "reading error"
    assert_eq 0 "$(calls_since CreateSandbox)" "CreateSandbox calls after mkdir, ls, status, spec"
    assert_eq 0 "$(calls_since GetSandbox)" "GetSandbox calls after mkdir"
    assert_eq 0 "$(calls_since Exec)" "Exec calls after mkdir"
    # (the session's first ListSandboxes, sent at mount, may land in this window)
    assert_eq "" "$(calls_since_all | tr ' ' '\n' | grep -v '^ListSandboxes=')" "calls after mkdir, ls, status, spec"
    # The unstarted sandbox is listed, with the files DESIGN.md names.
    assert_contains "$(ls "$MNT")" lazy "ls MNT"
    local f
    for f in ctl status events id snapshots spec error logs exec root; do
        assert_exists "$SB/$f"
    done
    assert_eq "../.root/lazy" "$(readlink "$SB/root")" "root link"
    # mkdir of an existing name: EEXIST
    must_fail "File exists" mkdir "$SB"
}

case_start_runs_and_reports_status_and_id() {
    mksb starter
    calls_mark
    ctl "$SB" start
    # `start` returns once it is running.
    assert_file_eq "$SB/status" $'running\n'
    assert_eq 1 "$(calls_since CreateSandbox)" "CreateSandbox calls for one start"
    local id
    id=$(rd "$SB/id") || exit 1
    assert_match "$id" '^[0-9a-f-]{8,}$' "id after start"
    # reading ctl gives the id and the latest exec's number (none yet)
    assert_contains "$(rd "$SB/ctl")" "$id" "ctl after start"
    # a second start is harmless: no new sandbox
    ctl "$SB" start
    assert_eq 1 "$(calls_since CreateSandbox)" "CreateSandbox calls after a second start"
    assert_eq "$id" "$(rd "$SB/id")" "id after a second start"
}

case_command_exits_completed_with_events() {
    mksb done0
    ctl "$SB" "command echo main-says-hi; sleep 1; exit 0"
    ctl "$SB" start
    # events: one line per transition, EOF once terminal
    local ev st
    ev=$(timeout "$(t 30)" cat "$SB/events") || fail "cat events did not end at the terminal state (rc $?): $(_it_show "$ev")"
    assert_contains "$ev" "unstarted" "events"
    assert_contains "$ev" "running" "events"
    assert_eq "completed 0" "$(printf '%s\n' "$ev" | tail -n 1)" "last events line"
    st=$(rd "$SB/status") || exit 1
    assert_eq "completed 0" "$st" "status after the main command exited 0"
    # order: unstarted before running before completed
    local order
    order=$(printf '%s\n' "$ev" | grep -n -E '^(unstarted|running|completed 0)$' | cut -d: -f2 | tr '\n' ' ')
    assert_eq "unstarted running completed 0 " "$order" "events order"
    # Reading events again after the end gives the whole history and EOF at once.
    assert_eq "$ev" "$(rd "$SB/events")" "events read again"
}

case_command_nonzero_is_failed() {
    mksb done3
    ctl "$SB" "command sleep 1; exit 3" start
    ctl "$SB" wait
    local st
    st=$(rd "$SB/status") || exit 1
    # The service reports a non-zero main exit as FAILED with a reason (or COMPLETED 3).
    assert_match "$st" '^(failed .+|completed 3)$' "status after exit 3"
    assert_contains "$st" 3 "status names the code"
}

# A main command that ends before the sandbox is seen running: `start` may succeed or
# fail, but it must not hang, and the sandbox must reach its terminal state.
case_command_exiting_at_once() {
    mksb quick
    ctl "$SB" "command exit 4"
    ctl_try "$SB" start || it_log "start of a sandbox whose command exits at once failed: $IT_OUT; error: $(rd "$SB/error")"
    ctl_try "$SB" wait
    local st
    st=$(rd "$SB/status") || exit 1
    assert_match "$st" '^(failed .*4.*|completed 4)$' "status after exit 4"
    ctl "$SB" wait
}

case_events_block_until_next_transition() {
    mksb evblock
    ctl "$SB" start
    local out=$IT_WORK/evblock.out
    timeout "$(t 30)" cat "$SB/events" >"$out" 2>&1 &
    local reader=$!
    sleep 1
    kill -0 $reader 2>/dev/null || fail "cat events of a running sandbox ended: $(cat "$out")"
    assert_contains "$(cat "$out")" running "events so far"
    ctl "$SB" stop
    local i
    for ((i = 0; i < 100 * IT_SCALE; i++)); do
        kill -0 $reader 2>/dev/null || break
        sleep 0.1
    done
    kill -0 $reader 2>/dev/null && fail "cat events still blocked 10 s after stop: $(cat "$out")"
    wait $reader || fail "cat events failed: $(cat "$out")"
    assert_eq terminated "$(tail -n 1 "$out")" "last events line after stop"
    assert_contains "$(cat "$out")" terminating "events after stop"
}

case_stop_terminates_and_keeps_directory() {
    mksb stopper
    ctl "$SB" start
    calls_mark
    ctl "$SB" "stop 1"
    assert_eq 1 "$(calls_since DeleteSandbox)" "DeleteSandbox calls for stop"
    ctl "$SB" wait
    assert_file_eq "$SB/status" $'terminated\n'
    assert_exists "$SB"
    assert_contains "$(ls "$MNT")" stopper "ls after stop"
    # an exec on a terminated sandbox fails and says so
    ctl_try "$SB" "exec true" && fail "exec on a terminated sandbox succeeded"
    assert_ne "" "$(rd "$SB/error")" "error after exec on terminated"
}

case_wait_returns_at_terminal_state() {
    mksb waiter
    ctl "$SB" "command sleep 2" start
    local t0 ms
    t0=$(now_ms)
    ctl "$SB" wait
    ms=$(($(now_ms) - t0))
    assert_eq "completed 0" "$(rd "$SB/status")" "status after wait"
    [ $ms -ge 1000 ] || fail "wait returned after $ms ms, before the 2 s command could end"
    # wait on an already terminal sandbox returns at once
    ctl "$SB" wait
}

case_spec_commands_before_start_and_ebusy_after() {
    mksb specced
    ctl "$SB" "image python:3.11" "env GREETING=hello world" "tag it-extra-tag" \
        "cpu 500m" "memory 512Mi" "lifetime 600" "workdir /tmp" "gpu 0"
    local spec
    spec=$(rd "$SB/spec") || exit 1
    printf '%s' "$spec" | json_ok || fail "pending spec is not JSON: $(_it_show "$spec")"
    assert_contains "$spec" GREETING "pending spec"
    assert_contains "$spec" "hello world" "pending spec"
    assert_contains "$spec" it-extra-tag "pending spec"
    assert_contains "$spec" 512Mi "pending spec"
    assert_contains "$spec" 500m "pending spec"
    assert_contains "$spec" 600 "pending spec"
    assert_contains "$spec" /tmp "pending spec"
    assert_contains "$spec" "$IT_TAG" "pending spec carries the session tag"
    ctl "$SB" start
    # They took effect in the sandbox.
    assert_eq "hello world|/tmp" "$(run_in "$SB" 'printf "%s|%s" "$GREETING" "$PWD"')" "env and workdir inside" || exit 1
    # After start every spec command is EBUSY and says so in error.
    local c
    for c in "image debian:12" "command true" "env A=B" "tag late" "cpu 1" "memory 1Gi" \
        "gpu 1" "lifetime 60" "workdir /"; do
        ctl_fails "Device or resource busy" "$SB" "$c"
        assert_contains "$(rd "$SB/error")" "$c" "error after the refused \"$c\""
    done
    # the service's view once started: JSON with its id, still with our values
    spec=$(rd "$SB/spec") || exit 1
    printf '%s' "$spec" | json_ok || fail "started spec is not JSON: $(_it_show "$spec")"
    assert_contains "$spec" "$(rd "$SB/id")" "started spec names the id"
    assert_contains "$spec" it-extra-tag "started spec"
    assert_not_contains "$spec" "debian:12" "spec after refused image"
}

case_spec_is_json_with_defaults() {
    mksb plain
    local spec
    spec=$(rd "$SB/spec") || exit 1
    printf '%s' "$spec" | json_ok || fail "spec is not JSON: $(_it_show "$spec")"
    assert_contains "$spec" "python:3.11" "default image in spec"
    assert_contains "$spec" plain "spec carries the name"
}

case_status_never_blocks() {
    mksb nonblock
    ctl "$SB" "command sleep 30" start
    local i t0
    t0=$(now_ms)
    for ((i = 0; i < 20; i++)); do rd "$SB/status" >/dev/null || exit 1; done
    [ $(($(now_ms) - t0)) -lt $((5000 * IT_SCALE)) ] || fail "20 status reads took $(($(now_ms) - t0)) ms"
    ctl "$SB" "stop 0"
}

case_auto_start_on_first_exec() {
    mksb auto
    calls_mark
    ctl "$SB" "exec echo auto"
    assert_eq 1 "$(calls_since CreateSandbox)" "CreateSandbox on first exec"
    assert_file_eq "$SB/stdout" $'auto\n'
    assert_eq running "$(rd "$SB/status")" "status after auto-start"
}

case_auto_start_on_file_access() {
    mksb autofile
    calls_mark
    ls "$SB/root/" >/dev/null || fail "ls root/ of an unstarted sandbox"
    assert_eq 1 "$(calls_since CreateSandbox)" "CreateSandbox on first file access"
    assert_eq running "$(rd "$SB/status")" "status after file access"
    assert_contains "$(ls "$SB/root/")" etc "ls root/"
}

case_ctrl_c_on_blocked_events() {
    mksb evint
    ctl "$SB" start
    sigint_ends "cat events" cat "$SB/events"
    it_log "cat events interrupted after $IT_MS ms"
    assert_file_eq "$SB/status" $'running\n'
}

# A command still running when its sandbox stops ends with it: `exit` answers.
case_exec_ends_when_sandbox_stops() {
    mksb execstop
    ctl "$SB" 'exec sleep 300'
    ctl "$SB" "stop 0"
    local code
    code=$(IT_RD_TIMEOUT=15 rd "$SB/exec/1/exit") || fail "exit of a command whose sandbox stopped did not answer"
    assert_ne 0 "$code" "exit code of a command killed by stop"
    assert_match "$(rd "$SB/exec/1/status")" '^exited ' "exec status after stop"
    ctl "$SB" wait
}

# Sandbox names are directory names: spaces, unicode and newlines work; what cannot be
# a sandbox name fails mkdir cleanly.
case_sandbox_names() {
    local n
    for n in "with space" "ünïcödé-日本" $'new\nline' "a'quote" '$(touch x)'; do
        mksb "$n"
        ctl "$SB" "exec echo ok"
        assert_file_eq "$SB/stdout" $'ok\n'
        assert_contains "$(ls "$MNT")" "$n" "ls MNT"
        assert_contains "$(rd "$SB/spec")" "$(printf '%s' "$n" | head -n 1)" "spec carries the name"
        must rm -r "$SB"
    done
    must_fail "File exists" mkdir "$MNT/.root"
    must_fail "File exists" mkdir "$MNT/.metrics"
    must_fail "File name too long" mkdir "$MNT/$(head -c 255 /dev/zero | tr '\0' x)"
    must_fail "" mkdir "$MNT/$(head -c 300 /dev/zero | tr '\0' y)"
}

it_case case_mkdir_is_unstarted_without_calls
it_case case_start_runs_and_reports_status_and_id
it_case case_command_exits_completed_with_events
it_case case_command_nonzero_is_failed
it_case case_command_exiting_at_once
it_case case_events_block_until_next_transition
it_case case_stop_terminates_and_keeps_directory
it_case case_wait_returns_at_terminal_state
it_case case_spec_commands_before_start_and_ebusy_after
it_case case_spec_is_json_with_defaults
it_case case_status_never_blocks
it_case case_auto_start_on_first_exec
it_case case_auto_start_on_file_access
it_case case_ctrl_c_on_blocked_events
it_case case_exec_ends_when_sandbox_stops
it_case case_sandbox_names
it_done
