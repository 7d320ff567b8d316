#!/usr/bin/env bash
# Removing: `rm -r MNT/NAME` stops the sandbox with exactly one DeleteSandbox and never
# deletes the files inside it; rmdir works (the pseudo-files do not count); unlinking
# the pseudo-files succeeds and changes nothing.
. "$(dirname "$0")/lib.sh"
it_start

case_rm_r_many_files_one_delete() {
    mksb full
    ctl "$SB" start
    run_in "$SB" 'mkdir -p /data && cd /data && for d in $(seq 1 20); do mkdir d$d; for f in $(seq 1 100); do echo $f > d$d/f$f; done; done; echo done' >/dev/null || exit 1
    ctl "$SB" 'exec echo out' 'exec sleep 300'
    # the mount knows the files (listed once), the sandbox has 2000 of them
    assert_eq 100 "$(ls "$SB/root/data/d7" | wc -l)" "files listed in one directory"
    local t0 ms calls
    calls_mark
    t0=$(now_ms)
    must rm -r "$SB"
    ms=$(($(now_ms) - t0))
    calls=$(calls_since_all)
    it_figure "rm -r of a sandbox holding 2000 files (and 2 execs): $calls ($ms ms)"
    assert_eq 1 "$(calls_since DeleteSandbox)" "DeleteSandbox calls for rm -r"
    assert_eq 0 "$(calls_since Exec)" "Exec calls (file deletions) for rm -r"
    assert_eq 0 "$(calls_since StreamExec)" "StreamExec calls for rm -r"
    assert_eq 0 "$(calls_since WriteFile)" "WriteFile calls for rm -r"
    assert_eq 0 "$(calls_since StreamLogs)" "StreamLogs calls for rm -r"
    assert_not_exists "$SB"
    assert_not_contains "$(ls "$MNT")" full "ls after rm -r"
    [ $ms -lt $((10000 * IT_SCALE)) ] || fail "rm -r took $ms ms"
}

# Readers blocked on a sandbox's streams end when it is removed (no hang).
case_rm_with_blocked_readers() {
    mksb busy
    ctl "$SB" "command sleep 300" start 'exec sleep 300' 'exec sleep 300'
    local pids=() p i n
    cat "$SB/exec/1/stdout" >/dev/null 2>&1 &
    pids+=($!)
    cat "$SB/events" >/dev/null 2>&1 &
    pids+=($!)
    cat "$SB/exec/2/exit" >/dev/null 2>&1 &
    pids+=($!)
    sleep 1
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null || fail "a reader did not block"; done
    must rm -r "$SB"
    for ((i = 0; i < 100 * IT_SCALE; i++)); do
        n=0
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && n=$((n + 1)); done
        [ $n -eq 0 ] && break
        sleep 0.1
    done
    [ $n -eq 0 ] || fail "$n readers still blocked 10 s after rm -r"
}

case_rm_rf_and_rmdir() {
    mksb rf
    ctl "$SB" "exec echo x"
    calls_mark
    must rm -rf "$SB"
    assert_eq 1 "$(calls_since DeleteSandbox)" "DeleteSandbox calls for rm -rf"
    assert_not_exists "$SB"
    # rmdir of a running sandbox with execs: the pseudo-files do not count as contents
    mksb rmd
    ctl "$SB" "exec echo x" "exec echo y"
    assert_file_eq "$SB/exec/2/stdout" $'y\n'
    calls_mark
    must rmdir "$SB"
    assert_eq 1 "$(calls_since DeleteSandbox)" "DeleteSandbox calls for rmdir"
    assert_not_exists "$SB"
}

case_rmdir_unstarted_makes_no_call() {
    mksb never
    calls_mark
    must rmdir "$SB"
    assert_eq "" "$(calls_since_all)" "calls for rmdir of an unstarted sandbox"
    assert_not_exists "$SB"
}

case_remove_stopped_sandbox() {
    mksb stopped
    ctl "$SB" start "stop 0"
    ctl "$SB" wait
    assert_file_eq "$SB/status" $'terminated\n'
    must rm -r "$SB"
    assert_not_exists "$SB"
}

case_same_name_after_remove_is_new() {
    mksb again
    ctl "$SB" start
    local id1 id2
    id1=$(rd "$SB/id") || exit 1
    run_in "$SB" 'echo old > /marker' >/dev/null || exit 1
    must rm -r "$SB"
    mksb again
    assert_file_eq "$SB/status" $'unstarted\n'
    ctl "$SB" start
    id2=$(rd "$SB/id") || exit 1
    assert_ne "$id1" "$id2" "id of the new sandbox"
    assert_eq absent "$(run_in "$SB" 'test -e /marker && echo present || echo absent')" "old sandbox's file in the new one" || exit 1
}

case_unlink_pseudo_files_changes_nothing() {
    mksb pseudo
    ctl "$SB" "exec echo hi"
    assert_file_eq "$SB/exec/1/stdout" $'hi\n'
    local before f
    before=$(rd "$SB/status") || exit 1
    calls_mark
    for f in status events id snapshots spec error logs ctl stdout stderr exit exec/1/stdout \
        exec/1/stderr exec/1/exit exec/1/status exec/1/cmd; do
        must rm -f "$SB/$f"
        assert_exists "$SB/$f"
    done
    must rm "$SB/status"
    # assert_exists stats `logs`, and a stat of logs starts following the main
    # process's output (its size is what it printed): that StreamLogs is not the unlink's.
    assert_eq "" "$(calls_since_all | tr ' ' '\n' | grep -v '^StreamLogs=' | tr '\n' ' ' | sed 's/ $//')" \
        "calls made by unlinking pseudo-files"
    assert_file_eq "$SB/exec/1/stdout" $'hi\n'
    assert_eq "$before" "$(rd "$SB/status")" "status after the unlinks"
    assert_eq "exec/1/stdout" "$(readlink "$SB/stdout")" "stdout link after unlink"
    # the root link is not removed either, and the sandbox still works
    must rm -f "$SB/root"
    assert_exists "$SB/root"
    ctl "$SB" "exec echo still"
    assert_file_eq "$SB/stdout" $'still\n'
    # rm -r of the exec directory: nothing changes
    rm -rf "$SB/exec" 2>/dev/null
    assert_file_eq "$SB/exec/1/stdout" $'hi\n'
    assert_exists "$SB"
}

it_case case_rm_r_many_files_one_delete
it_case case_rm_with_blocked_readers
it_case case_rm_rf_and_rmdir
it_case case_rmdir_unstarted_makes_no_call
it_case case_remove_stopped_sandbox
it_case case_same_name_after_remove_is_new
it_case case_unlink_pseudo_files_changes_nothing
it_done
