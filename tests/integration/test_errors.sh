#!/usr/bin/env bash
# Errors: unknown paths (ENOENT), a huge ctl write, service errors mapped to errno with
# the words in `error`, the backend killed mid-call (clear error, no hang, the daemon
# survives), and servers answering garbage (an error, never a crash).
. "$(dirname "$0")/lib.sh"
it_start

# A process crash or sanitizer report in a log (ERROR lines may be expected here).
no_crash_in_log() {
    if grep -E 'AddressSanitizer|LeakSanitizer|runtime error|==[0-9]+==|Segmentation|Aborted|assert' "$1"; then
        fail "crash report in $1"
    fi
}

# start_backend2 DIR: a second local backend this case may kill; URL in B2_URL, pid B2_PID.
start_backend2() {
    local d=$1
    mkdir -p "$d"
    node "$IT_BACKEND/server.js" --listen 127.0.0.1:0 --state-dir "$d/state" \
        --address-file "$d/addr" --quiet >/dev/null 2>"$d/log" &
    B2_PID=$!
    B2_URL=$(it_address "$d/addr" "second backend" "$d/log") || exit 1
}

# start_fake MODE DIR: fakesrv.py; URL in FAKE_URL.
start_fake() {
    mkdir -p "$2"
    "$IT_PY" "$IT_DIR/fakesrv.py" "$1" "$2/addr" 2>"$2/log" &
    FAKE_URL=$(it_address "$2/addr" "fake server $1" "$2/log") || exit 1
}

case_unknown_paths_enoent() {
    must_fail "No such file or directory" cat "$MNT/no-such-sandbox/status"
    must_fail "No such file or directory" ls "$MNT/no-such-sandbox"
    must_fail "No such file or directory" bash -c 'echo start > "$1/no-such-sandbox/ctl"' _ "$MNT"
    must_fail "No such file or directory" cat "$MNT/.root/no-such-sandbox/etc/os-release"
    mksb known
    must_fail "No such file or directory" cat "$SB/no-such-file"
    must_fail "No such file or directory" cat "$SB/exec/1/stdout"
    must_fail "No such file or directory" cat "$SB/exec/99/exit"
    must_fail "No such file or directory" ls "$SB/exec/abc"
    # the tree itself refuses what it does not hold
    must_fail "" touch "$MNT/plain-file"
    must_fail "" mkdir "$SB/extra-dir"
    must_fail "" touch "$SB/extra-file"
    assert_not_exists "$MNT/plain-file"
    assert_not_exists "$SB/extra-dir"
    # nothing was created by any of that
    assert_file_eq "$SB/status" $'unstarted\n'
}

case_huge_ctl_write_is_refused() {
    mksb huge
    # one 2 MiB line, and 64 MiB without a newline: refused (said in `error`), quickly,
    # without growing the daemon
    timeout "$(t 30)" bash -c 'head -c 2097152 /dev/zero | tr "\0" a | sed "s/^/exec echo /" > "$1/ctl"' _ "$SB"
    local err
    err=$(rd "$SB/error") || exit 1
    assert_ne "" "$err" "error after a 2 MiB line"
    it_log "error after a 2 MiB line: $err"
    local t0
    t0=$(now_ms)
    timeout "$(t 30)" bash -c 'head -c 67108864 /dev/zero | tr "\0" b > "$1/ctl"' _ "$SB" 2>/dev/null
    [ $? -ne 124 ] || fail "64 MiB write to ctl timed out"
    [ $(($(now_ms) - t0)) -lt $((20000 * IT_SCALE)) ] || fail "64 MiB write to ctl took $(($(now_ms) - t0)) ms"
    assert_eq 0 "$(ls "$SB/exec" | wc -l)" "execs after huge writes"
    assert_file_eq "$SB/status" $'unstarted\n'
    # the daemon's memory did not grow with it
    local rss
    rss=$(awk '/VmRSS/ {print $2}' "/proc/${IT_MOUNT_PID[$MNT]}/status")
    it_log "daemon RSS after the huge writes: ${rss} kB"
    [ -n "$CWSFS_WRAPPER" ] || assert_le "$rss" 100000 "daemon RSS in kB after a 64 MiB ctl write"
    # and the sandbox still works
    ctl "$SB" "exec echo fine"
    assert_file_eq "$SB/stdout" $'fine\n'
}

# DESIGN: a bad command fails the write(2) that completes its line; a line too long to
# hold must fail a write too (not be dropped with every write reporting success).
case_huge_ctl_line_fails_the_write() {
    mksb huge2
    must_fail "" bash -c 'head -c 2097152 /dev/zero | tr "\0" a | sed "s/^/exec echo /" > "$1/ctl"' _ "$SB"
    it_log "writing a 2 MiB line: $IT_OUT"
    must_fail "" bash -c 'head -c 2097152 /dev/zero | tr "\0" a | sed "s/^/exec echo /;s/$/\n/" > "$1/ctl"' _ "$SB"
}

case_service_errors_map_to_errno() {
    # a GPU request: the local runner has none (resource_exhausted -> EAGAIN)
    mksb gpu
    ctl "$SB" "gpu 1"
    ctl_fails "Resource temporarily unavailable" "$SB" start
    local err
    err=$(rd "$SB/error") || exit 1
    assert_ne "" "$err" "error after a refused create"
    it_log "error after gpu 1 + start: $err"
    # a sandbox deleted behind the mount's back: the next exec fails and says so
    mksb gone
    ctl "$SB" start
    local id
    id=$(rd "$SB/id") || exit 1
    curl -s --max-time 10 -H 'content-type: application/json' \
        -d "{\"sandboxId\":\"$id\",\"gracePeriodSeconds\":0}" \
        "$IT_URL/coreweave.sandbox.v1.SandboxService/DeleteSandbox" >/dev/null || fail "DeleteSandbox by curl"
    sleep 1
    ctl_try "$SB" "exec true" && {
        # the exec may have been accepted before the deletion was seen: then it ends badly
        local code
        code=$(rd "$SB/exit") || exit 1
        [ "$code" != 0 ] || fail "exec in a deleted sandbox exited 0"
    }
    assert_ne "" "$(rd "$SB/error")" "error after exec in a deleted sandbox"
    it_log "error after exec in a deleted sandbox: $(rd "$SB/error")"
}

case_backend_killed_mid_call() {
    local d=$IT_WORK/b2 m=$IT_WORK/mkill out pid i err
    start_backend2 "$d"
    it_mount "$m" "timeout=5000" "$B2_URL"
    mksb victim "$m"
    ctl "$SB" 'exec echo before; sleep 60'
    assert_eq before "$(timeout "$(t 5)" head -n 1 "$SB/stdout")" "output before the kill"
    out=$IT_WORK/killed.out
    cat "$SB/exec/1/stdout" >"$out" 2>&1 &
    pid=$!
    sleep 0.5
    kill -KILL "$B2_PID"
    wait "$B2_PID" 2>/dev/null
    # the blocked reader ends (EOF or an error), not hangs
    for ((i = 0; i < 200 * IT_SCALE; i++)); do
        kill -0 $pid 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 $pid 2>/dev/null; then
        kill -KILL $pid
        fail "a reader of the exec's stdout still blocked 20 s after the backend died"
    fi
    it_log "reader after the backend died: $(tr '\n' ' ' <"$out")"
    # a new call fails with a clear error in `error`, within the call timeout and retries
    local t0
    t0=$(now_ms)
    ctl_try "$SB" "exec echo after" && fail "exec succeeded with the backend dead"
    it_log "exec with the backend dead: $IT_OUT ($(($(now_ms) - t0)) ms)"
    [ $(($(now_ms) - t0)) -lt $((40000 * IT_SCALE)) ] || fail "exec with the backend dead took $(($(now_ms) - t0)) ms"
    err=$(rd "$SB/error") || exit 1
    assert_ne "" "$err" "error with the backend dead"
    it_log "error: $err"
    # the daemon survives: the tree still answers, a new sandbox can be made
    ls "$m" >/dev/null || fail "ls of the mount after the backend died"
    assert_match "$(rd "$SB/status")" '.' "status after the backend died"
    mksb newone "$m"
    assert_file_eq "$SB/status" $'unstarted\n'
    ctl_try "$SB" start && fail "start succeeded with the backend dead"
    no_crash_in_log "$IT_LAST_LOG"
    # the backend being gone is reported (as WARN/ERROR), the unmount is clean
    IT_LOG_ALLOW='.' it_unmount "$m" || fail "unmount after the backend died"
}

# A StreamExec upload whose body stops moving (the HTTP/2 upload stall of Debian 12's
# libcurl) is given up after 20 s and sent again whole: cp ends and the file is whole.
case_stalled_upload_is_sent_again() {
    local d=$IT_WORK/stall m=$IT_WORK/mstall big=$IT_WORK/big33 t0 ms
    it_fault_proxy "$d" stall-upload 1048576
    it_mount "$m" "" "$FAULT_URL"
    mksb stalled "$m"
    ctl "$SB" start
    head -c $((33 * 1024 * 1024)) /dev/urandom >"$big"
    calls_mark
    t0=$(now_ms)
    must timeout "$(t 150)" cp "$big" "$SB/root/big33"
    ms=$(($(now_ms) - t0))
    grep -q 'stalled after' "$d/log" || fail "the proxy stalled no upload: $(cat "$d/log")"
    grep -q 'stopped moving' "$IT_LAST_LOG" || fail "cwsfs did not log the stall"
    assert_eq 2 "$(calls_since StreamExec)" "StreamExec calls: the stalled upload and its resend"
    must cmp "$big" "$SB/root/big33"
    it_figure "a 33 MiB upload stalled once by the server: sent again, cp took $ms ms"
    ctl "$SB" "stop 0"
    IT_LOG_ALLOW='stopped moving' it_unmount "$m" || fail "unmount"
    kill "$FAULT_PID"
}

case_garbage_server_at_startup_is_a_clear_error() {
    local mode m=$IT_WORK/mjunk
    for mode in junk raw hang; do
        start_fake "$mode" "$IT_WORK/fake-$mode"
        # raw and hang over h2c (the default for http://), junk over HTTP/1.1
        local opts="timeout=3000"
        [ $mode = junk ] && opts="$opts,http1"
        if it_mount_try "$m" "$opts" "$FAKE_URL"; then
            # mounted anyway: using it must give errors, not crashes
            mksb a "$m"
            ctl_try "$SB" start && fail "start against a $mode server succeeded"
            assert_ne "" "$(rd "$SB/error")" "error against a $mode server"
            IT_LOG_ALLOW='.' it_unmount "$m" || fail "unmount"
        else
            [ "$IT_MOUNT_RC" != timeout ] || fail "cwsfs neither mounted nor exited against a $mode server"
            [ "$IT_MOUNT_RC" -ge 1 ] && [ "$IT_MOUNT_RC" -lt 128 ] || fail "cwsfs exited with $IT_MOUNT_RC against a $mode server (a signal?)"
            it_log "against a $mode server cwsfs exited $IT_MOUNT_RC: $(tail -n 1 "$IT_LAST_LOG")"
            assert_match "$(cat "$IT_LAST_LOG")" '.' "message when refusing a $mode server"
        fi
        no_crash_in_log "$IT_LAST_LOG"
    done
}

case_garbage_answers_after_mount() {
    local m=$IT_WORK/mjunk2
    start_fake junk-rpc "$IT_WORK/fake-rpc"
    it_mount "$m" "timeout=3000,http1" "$FAKE_URL"
    ls "$m" >/dev/null || fail "ls of a mount against a junk server"
    mksb b "$m"
    ctl_try "$SB" start && fail "start against junk answers succeeded"
    local err
    err=$(rd "$SB/error") || exit 1
    assert_ne "" "$err" "error after junk answers"
    it_log "error after a junk CreateSandbox answer: $err"
    ctl_try "$SB" "exec true" && fail "exec against junk answers succeeded"
    # still alive and answering
    assert_match "$(rd "$SB/status")" '.' "status"
    ls "$m" >/dev/null || fail "ls after junk answers"
    no_crash_in_log "$IT_LAST_LOG"
    IT_LOG_ALLOW='.' it_unmount "$m" || fail "unmount"
}

# Transient failures: a create whose answer is lost is retried with the same requestId
# (so the service makes one sandbox, not two); a failed GetSandbox poll is retried.
case_retries_with_the_same_request_id() {
    local d=$IT_WORK/flaky m=$IT_WORK/mflaky tag=$IT_TAG-flaky ids n url
    mkdir -p "$d"
    FAKESRV_UPSTREAM=$IT_URL "$IT_PY" "$IT_DIR/fakesrv.py" flaky "$d/addr" 2>"$d/log" &
    url=$(it_address "$d/addr" "flaky proxy" "$d/log") || exit 1
    it_mount "$m" "http1,tags=$tag" "$url"
    mksb retried "$m"
    calls_mark
    ctl "$SB" start
    assert_file_eq "$SB/status" $'running\n'
    # the create reached the service twice, with one requestId, and made one sandbox
    assert_eq 2 "$(calls_since CreateSandbox)" "CreateSandbox calls (the first answer was lost)"
    ids=$(grep '"rpc": "CreateSandbox"' "$d/addr.bodies" | grep -o 'requestId[^,}]*' | sort -u)
    assert_eq 1 "$(printf '%s\n' "$ids" | grep -c .)" "distinct requestIds of the retried create ($ids)"
    n=$(curl -s --max-time 10 -H 'content-type: application/json' -d "{\"tags\":[\"$tag\"]}" \
        "$IT_URL/coreweave.sandbox.v1.SandboxService/ListSandboxes" | grep -o '"sandboxId"' | wc -l)
    assert_eq 1 "$n" "sandboxes with the tag after a retried create"
    assert_eq "$(rd "$SB/id")" "$(curl -s --max-time 10 -H 'content-type: application/json' -d "{\"tags\":[\"$tag\"]}" \
        "$IT_URL/coreweave.sandbox.v1.SandboxService/ListSandboxes" | grep -o '"sandboxId":"[^"]*"' | cut -d'"' -f4)" "the mount's sandbox is the one made"
    ctl "$SB" "stop 0"
    ctl "$SB" wait
    assert_file_eq "$SB/status" $'terminated\n'
    IT_LOG_ALLOW='.' it_unmount "$m" || fail "unmount"
}

it_case case_retries_with_the_same_request_id
it_case case_unknown_paths_enoent
it_case case_huge_ctl_write_is_refused
it_case case_huge_ctl_line_fails_the_write
it_case case_service_errors_map_to_errno
it_case case_backend_killed_mid_call
it_case case_stalled_upload_is_sent_again
it_case case_garbage_server_at_startup_is_a_clear_error
it_case case_garbage_answers_after_mount
it_done
