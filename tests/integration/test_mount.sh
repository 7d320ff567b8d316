#!/usr/bin/env bash
# The mount itself: -h and --version, bad options, unmount with streams open,
# -o cleanup, mounting through mount(8) (mount -t fuse / fuse.cwsfs), session defaults
# as mount options.
. "$(dirname "$0")/lib.sh"
it_start

case_help_and_version() {
    local h v opt
    h=$(timeout 10 "$CWSFS_BIN" -h 2>&1) || fail "cwsfs -h exited $?"
    for opt in endpoint= api_key_file= image= command= tags= env= lifetime= cpu= memory= gpu= \
        cleanup allow_other -f -d; do
        assert_contains "$h" "$opt" "cwsfs -h"
    done
    assert_eq "$h" "$(timeout 10 "$CWSFS_BIN" --help 2>&1)" "--help is -h"
    v=$(timeout 10 "$CWSFS_BIN" --version 2>&1) || fail "cwsfs --version exited $?"
    assert_match "$v" 'cwsfs.*[0-9]+\.[0-9]+\.[0-9]+' "cwsfs --version"
    v=$(timeout 10 "$CWSFS_BIN" -V 2>&1) || fail "cwsfs -V exited $?"
    assert_match "$v" '[0-9]+\.[0-9]+' "cwsfs -V"
}

case_bad_invocations_fail_clearly() {
    local out rc
    mkdir -p "$IT_WORK/nomnt"
    out=$(timeout 10 "$CWSFS_BIN" 2>&1)
    rc=$?
    [ $rc -ne 0 ] && [ $rc -lt 124 ] || fail "cwsfs without a mountpoint exited $rc"
    assert_ne "" "$out" "message without a mountpoint"
    out=$(timeout 10 "$CWSFS_BIN" "$IT_WORK/nomnt" -f -o "endpoint=$IT_URL,no_such_option=1" 2>&1)
    rc=$?
    [ $rc -ne 0 ] && [ $rc -lt 124 ] || fail "cwsfs with an unknown option exited $rc"
    assert_contains "$out" no_such_option "message for an unknown option"
    mountpoint -q "$IT_WORK/nomnt" 2>/dev/null && fail "mounted with an unknown option"
    # an API key on the command line is refused (keys never go on command lines)
    out=$(timeout 10 "$CWSFS_BIN" "$IT_WORK/nomnt" -f -o "endpoint=$IT_URL,api_key=secret" 2>&1)
    rc=$?
    [ $rc -ne 0 ] || fail "cwsfs accepted api_key= on the command line"
    assert_not_contains "$out" "secret" "message for api_key= (the key must not be echoed)"
    # a mountpoint that does not exist
    out=$(timeout 10 "$CWSFS_BIN" "$IT_WORK/does/not/exist" -f -o "endpoint=$IT_URL" 2>&1)
    [ $? -ne 0 ] || fail "cwsfs mounted on a missing directory"
    # nothing listening at the endpoint: refuses to mount, says so, does not hang
    local port
    port=$("$IT_PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    out=$(timeout 60 "$CWSFS_BIN" "$IT_WORK/nomnt" -f -o "endpoint=http://127.0.0.1:$port" 2>&1)
    rc=$?
    [ $rc -ne 0 ] && [ $rc -ne 124 ] || fail "cwsfs against a closed port exited $rc"
    assert_contains "$out" "127.0.0.1:$port" "message for a closed port"
    mountpoint -q "$IT_WORK/nomnt" 2>/dev/null && fail "mounted against a closed port"
    return 0
}

case_unmount_with_streams_open() {
    local m=$IT_WORK/mstreams pid rc i out=$IT_WORK/streams.out holder reader reader2
    it_mount "$m"
    pid=${IT_MOUNT_PID[$m]}
    mksb busy "$m"
    ctl "$SB" 'command echo log-line; sleep 300' start 'exec echo hi; sleep 300'
    wait_for 5 test -s "$SB/exec/1/stdout"
    cat "$SB/exec/1/stdout" >"$out.1" 2>&1 &
    reader=$!
    cat "$SB/logs" >"$out.2" 2>&1 &
    reader2=$!
    (exec 9>"$SB/ctl" && sleep 300) &
    holder=$!
    sleep 1
    # plain unmount: refused while files are open (the kernel's rule) or done; either
    # way it answers at once
    timeout "$(t 10)" fusermount3 -u "$m" 2>"$out.u"
    rc=$?
    [ $rc -ne 124 ] || fail "fusermount3 -u hung with streams open"
    it_log "fusermount3 -u with streams open: rc $rc $(cat "$out.u")"
    if mountpoint -q "$m"; then
        must fusermount3 -uz "$m"
    fi
    # the daemon goes on serving the open files; SIGTERM (as at shutdown) ends it: the
    # blocked readers get an error at once, the daemon exits 0 with a clean log
    kill -0 "$pid" 2>/dev/null || fail "daemon gone after a lazy unmount with open files"
    kill -TERM "$pid"
    for ((i = 0; i < 100 * IT_SCALE; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && fail "daemon still running 10 s after SIGTERM"
    wait "$pid"
    rc=$?
    unset "IT_MOUNT_PID[$m]"
    assert_eq 0 "$rc" "daemon's exit status after SIGTERM with streams open"
    for p in $reader $reader2; do
        for ((i = 0; i < 50 * IT_SCALE; i++)); do
            kill -0 "$p" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$p" 2>/dev/null && fail "a reader still blocked 5 s after the daemon exited"
    done
    it_log "readers: $(cat "$out.1" "$out.2" | tr '\n' ' ')"
    kill "$holder" 2>/dev/null
    it_check_log "$IT_LAST_LOG" || fail "log after unmount with streams open"
}

case_unmount_keeps_and_cleanup_stops() {
    local m1=$IT_WORK/mkeep m2=$IT_WORK/mclean m3=$IT_WORK/mafter m4=$IT_WORK/mother tag=$IT_TAG-cl
    # a sandbox made by another mount with the same tags: cleanup must not touch it
    it_mount "$m4" "tags=$tag"
    mksb foreign "$m4"
    ctl "$SB" start
    it_unmount "$m4" || fail "unmount"
    it_mount "$m2" "tags=$tag,cleanup"
    assert_contains "$(ls "$m2")" foreign "adopted before cleanup"
    mksb started "$m2"
    ctl "$SB" start
    mksb autostarted "$m2"
    ctl "$SB" 'exec echo x'
    mksb unstarted "$m2"
    mksb stopped "$m2"
    ctl "$SB" start "stop 0"
    calls_mark
    it_unmount "$m2" || fail "unmount with cleanup"
    local del
    del=$(calls_since DeleteSandbox)
    it_log "DeleteSandbox calls at unmount with -o cleanup: $del"
    [ "$del" -ge 2 ] && [ "$del" -le 3 ] || fail "DeleteSandbox calls at unmount with cleanup: $del (expected 2: started, autostarted; 3 if the stopped one is deleted again)"
    # a new mount with the same tags: the cleaned-up ones are gone, the foreign one is there
    it_mount "$m3" "tags=$tag"
    local l
    l=$(ls "$m3")
    assert_contains "$l" foreign "ls after cleanup"
    assert_not_contains "$l" autostarted "ls after cleanup"
    assert_eq running "$(rd "$m3/foreign/status")" "foreign sandbox after cleanup"
    for n in started autostarted; do
        [ -e "$m3/$n" ] && fail "$n still listed after the cleanup unmount (status $(rd "$m3/$n/status"))"
    done
    # without cleanup, unmount stops nothing
    mksb kept "$m3"
    ctl "$SB" start
    calls_mark
    it_unmount "$m3" || fail "unmount"
    assert_eq 0 "$(calls_since DeleteSandbox)" "DeleteSandbox calls at unmount without cleanup"
    it_mount "$m1" "tags=$tag"
    assert_eq running "$(rd "$m1/kept/status")" "sandbox after an unmount without cleanup"
    must rm -r "$m1/kept" "$m1/foreign"
    it_unmount "$m1" || fail "unmount"
}

case_session_defaults_as_options() {
    local m=$IT_WORK/mdefaults
    it_mount "$m" 'env=GREET=hi there,env=OTHER=2,lifetime=1200,cpu=500m,memory=256Mi,command=echo from-default-command\, with comma; sleep 300,tag=extra-tag-opt'
    mksb d "$m"
    local spec
    spec=$(rd "$SB/spec") || exit 1
    assert_contains "$spec" GREET "pending spec"
    assert_contains "$spec" 1200 "pending spec lifetime"
    assert_contains "$spec" 256Mi "pending spec memory"
    assert_contains "$spec" 500m "pending spec cpu"
    assert_contains "$spec" extra-tag-opt "pending spec tags"
    assert_contains "$spec" "from-default-command, with comma" "pending spec command"
    ctl "$SB" start
    assert_eq "hi there|2" "$(run_in "$SB" 'printf "%s|%s" "$GREET" "$OTHER"')" "env from mount options" || exit 1
    assert_contains "$(timeout "$(t 5)" head -n 1 "$SB/logs")" "from-default-command, with comma" "main command from -o command="
    # a sandbox can still override the defaults before start
    mksb e "$m"
    ctl "$SB" "env GREET=override" start
    assert_eq override "$(run_in "$SB" 'printf %s "$GREET"')" "env overridden by ctl" || exit 1
    must rm -r "$m/d" "$m/e"
    it_unmount "$m" || fail "unmount"
}

# One grammar for the sandbox spec: a mount option is refused in the ctl's own words
# exactly when the ctl line is, and every form both accept, the backend accepts too.
case_spec_options_share_the_ctl_grammar() {
    local m=$IT_WORK/mspec opt out rc
    mkdir -p "$m"
    for opt in cpu=2Gi cpu=0 cpu=1.5m memory=1m memory=0 gpu=x lifetime=0 "env=A B=1" tag=a/b; do
        out=$(timeout 10 "$CWSFS_BIN" "$m" -f -o "endpoint=$IT_URL,$opt" 2>&1)
        rc=$?
        [ $rc -ne 0 ] && [ $rc -lt 124 ] || fail "-o $opt: cwsfs exited $rc"
        mountpoint -q "$m" && fail "mounted with -o $opt"
        assert_contains "$out" "-o $opt: ${opt%%=*}: " "message for -o $opt"
        mksb "spec$RANDOM"
        ctl_try "$SB" "${opt%%=*} ${opt#*=}" && fail "ctl accepted '${opt%%=*} ${opt#*=}' that -o refused"
        must rmdir "$SB"
    done
    it_mount "$m" "memory=.5Gi,cpu=.25"
    mksb s "$m"
    ctl "$SB" start
    assert_eq running "$(it_status "$SB")" "a sandbox with memory=.5Gi cpu=.25"
    mksb t "$m"
    ctl "$SB" "memory 1.G" "cpu 2.0m" start
    assert_eq running "$(it_status "$SB")" "a sandbox with memory 1.G cpu 2.0m (under the least CFS quota)"
    must rm -r "$m/s" "$m/t"
    it_unmount "$m" || fail "unmount"
}

case_mount_through_mount8() {
    local m=$IT_WORK/mmount8 pid i bin=$IT_WORK/bin
    mkdir -p "$m" "$bin"
    ln -sf "$CWSFS_BIN" "$bin/cwsfs"
    # fstab style: mount.fuse3 runs PROGRAM#SOURCE with the options, fstab noise included
    must mount -t fuse -o "endpoint=$IT_URL,tags=$IT_TAG-m8,_netdev,nofail,noauto,user,comment=x,x-systemd.automount" "$bin/cwsfs#cwsfs" "$m"
    mountpoint -q "$m" || fail "mount -t fuse did not mount"
    assert_contains "$(grep " $m " /proc/mounts)" "fuse.cwsfs" "type in /proc/mounts"
    pid=$(pgrep -f -x "$bin/cwsfs cwsfs $m .*" | head -n 1)
    [ -n "$pid" ] || fail "no daemon process for the mount(8) mount"
    mksb viamount "$m"
    ctl "$SB" 'exec echo via-mount8'
    assert_file_eq "$SB/stdout" $'via-mount8\n'
    must rm -r "$SB"
    must fusermount3 -u "$m"
    for ((i = 0; i < 100 * IT_SCALE; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && { kill -KILL "$pid"; fail "daemon still running 10 s after unmount"; }
    # mount -t fuse.cwsfs needs the program on mount's PATH (an installed cwsfs)
    if command -v mount.fuse.cwsfs >/dev/null || PATH=/sbin:/bin:/usr/sbin:/usr/bin command -v cwsfs >/dev/null; then
        must mount -t fuse.cwsfs -o "endpoint=$IT_URL,tags=$IT_TAG-m8" cwsfs "$m"
        mountpoint -q "$m" || fail "mount -t fuse.cwsfs did not mount"
        must fusermount3 -u "$m"
    else
        it_log "mount -t fuse.cwsfs not tried: no installed cwsfs on mount's PATH"
    fi
}

it_case case_help_and_version
it_case case_bad_invocations_fail_clearly
it_case case_unmount_with_streams_open
it_case case_unmount_keeps_and_cleanup_stops
it_case case_session_defaults_as_options
it_case case_spec_options_share_the_ctl_grammar
it_case case_mount_through_mount8
it_done
