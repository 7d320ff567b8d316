#!/usr/bin/env bash
# The ctl file: every command, malformed lines (EINVAL, `error` quotes the command,
# nothing half-done), several lines per write, a line split across writes, `>` and
# `>>`, reading ctl.
. "$(dirname "$0")/lib.sh"
it_start

# number of execs a sandbox has (exec/ entries)
nexecs() { timeout "$(t 10)" ls "$1/exec" | wc -l; }

case_exec_and_execv() {
    mksb cmds
    ctl "$SB" "exec echo via shell \$((6*7))"
    assert_file_eq "$SB/exec/1/stdout" $'via shell 42\n'
    assert_file_eq "$SB/exec/1/cmd" $'echo via shell $((6*7))\n'
    # execv: an exact argv, no shell: metacharacters stay literal
    ctl "$SB" 'execv ["/bin/echo","a  b","$(id -u)",";","*"]'
    assert_file_eq "$SB/exec/2/stdout" $'a  b $(id -u) ; *\n'
    ctl "$SB" 'execv ["printf","%s|","x y","z"]'
    assert_file_eq "$SB/exec/3/stdout" 'x y|z|'
    assert_file_eq "$SB/exec/3/exit" $'0\n'
}

# `wait` blocks in write(2) until a terminal state; Ctrl-C ends it at once
# and changes nothing.
case_ctrl_c_on_blocked_wait() {
    mksb waitint
    ctl "$SB" "command sleep 300" start
    sigint_ends "echo wait > ctl" bash -c 'echo wait > "$1/ctl"' _ "$SB"
    it_log "wait interrupted after $IT_MS ms"
    assert_file_eq "$SB/status" $'running\n'
    ctl "$SB" 'exec echo after'
    assert_file_eq "$SB/stdout" $'after\n'
}

case_read_ctl_gives_id_and_latest_exec() {
    mksb reader
    local c id
    c=$(rd "$SB/ctl") || exit 1
    assert_not_contains "$c" "1" "ctl of an unstarted sandbox"
    ctl "$SB" "exec true" "exec true"
    id=$(rd "$SB/id") || exit 1
    assert_eq "$id 2" "$(rd "$SB/ctl")" "ctl after two execs"
}

case_start_wait_stop_with_grace() {
    mksb graceful
    # a main process that ignores SIGTERM stops only at the end of the grace period
    ctl "$SB" "command trap '' TERM; sleep 120" start
    assert_file_eq "$SB/status" $'running\n'
    local t0 ms
    t0=$(now_ms)
    ctl "$SB" "stop 1"
    ctl "$SB" wait
    ms=$(($(now_ms) - t0))
    assert_file_eq "$SB/status" $'terminated\n'
    # the default grace is 10 s: 1 s (plus polling) shows the argument was passed
    [ $ms -lt $((8000 * IT_SCALE)) ] || fail "stop 1 + wait took $ms ms (grace not applied?)"
    # stop without an argument on a running sandbox
    mksb plainstop
    ctl "$SB" start "stop"
    ctl "$SB" wait
    assert_file_eq "$SB/status" $'terminated\n'
}

case_spec_commands_take_effect() {
    mksb specs
    ctl "$SB" "env ONE=1" "env TWO=two words=and=equals" "workdir /var" "command sleep 300" \
        "lifetime 900" "tag it-ctl-tag" "cpu 1" "memory 256Mi" "gpu 0" "image python:3.11"
    ctl "$SB" start
    assert_eq "1|two words=and=equals|/var" "$(run_in "$SB" 'printf "%s|%s|%s" "$ONE" "$TWO" "$PWD"')" "env and workdir" || exit 1
    # The main command is ours (not the keep-alive): pid 1 runs sleep 300.
    assert_contains "$(run_in "$SB" 'cat /proc/1/cmdline | tr "\0" " "')" "sleep 300" "main command" || exit 1
    local spec
    spec=$(rd "$SB/spec") || exit 1
    assert_contains "$spec" it-ctl-tag "spec tags"
    assert_contains "$spec" 900 "spec lifetime"
    assert_contains "$spec" 256Mi "spec memory"
}

case_snapshot_appends_id() {
    mksb snapper
    ctl "$SB" start
    run_in "$SB" 'echo data > /snapfile' >/dev/null || exit 1
    assert_file_eq "$SB/snapshots" ""
    calls_mark
    ctl "$SB" snapshot
    assert_eq 1 "$(calls_since CreateFileSystemSnapshot)" "CreateFileSystemSnapshot calls"
    local s
    s=$(rd "$SB/snapshots") || exit 1
    assert_eq 1 "$(printf '%s\n' "$s" | grep -c .)" "lines in snapshots after one snapshot"
    assert_match "$s" '^[A-Za-z0-9._-]+$' "snapshot id"
    ctl "$SB" snapshot
    s=$(rd "$SB/snapshots") || exit 1
    assert_eq 2 "$(printf '%s\n' "$s" | sort -u | grep -c .)" "distinct lines after two snapshots"
}

case_malformed_lines_fail_einval_and_quote() {
    mksb malformed
    ctl "$SB" "env KEEP=1"
    local spec_before bad err
    spec_before=$(rd "$SB/spec") || exit 1
    calls_mark
    for bad in "exce ls" "frobnicate" "gpu x" "gpu -1" "lifetime -5" "lifetime abc" \
        "cpu lots" "memory 12 parsecs" "workdir relative/path" "tag bad tag!" "env =nokey" \
        "env NOEQUALS" 'execv ["unterminated"' "execv []" 'execv {"a":1}' "execv [1,2]" \
        "stop soon" "exec" "image" "START"; do
        ctl_fails "Invalid argument" "$SB" "$bad"
        # the error names the command and quotes the bad text
        err=$(rd "$SB/error") || exit 1
        err=${err//\\/} # quoting may escape the quotes
        assert_contains "$err" "${bad%% *}" "error after \"$bad\""
        [ "${bad#* }" != "$bad" ] && assert_contains "$err" "${bad#* }" "error after \"$bad\""
    done
    # nothing half-done: no call, no exec, the spec unchanged, still unstarted
    assert_eq "" "$(calls_since_all)" "calls made by malformed lines"
    assert_eq "$spec_before" "$(rd "$SB/spec")" "spec after malformed lines"
    assert_file_eq "$SB/status" $'unstarted\n'
    assert_eq 0 "$(nexecs "$SB")" "execs after malformed lines"
    # and the sandbox still works afterwards
    ctl "$SB" "exec echo fine"
    assert_file_eq "$SB/stdout" $'fine\n'
    # malformed on a running sandbox: nothing happens either
    calls_mark
    ctl_fails "Invalid argument" "$SB" "stop now"
    assert_eq running "$(rd "$SB/status")" "status after a bad stop"
    assert_eq 0 "$(calls_since DeleteSandbox)" "DeleteSandbox after a bad stop"
    # bytes the service cannot carry are refused whole, never cut or dropped: a NUL
    # byte, and text that is not UTF-8
    local n0
    n0=$(nexecs "$SB")
    must_fail "Invalid argument" "$IT_PY" -c 'import os,sys; fd=os.open(sys.argv[1], os.O_WRONLY); os.write(fd, b"exec echo a\0b\n")' "$SB/ctl"
    assert_contains "$(rd "$SB/error")" "NUL" "error after a NUL byte"
    must_fail "Invalid argument" "$IT_PY" -c 'import os,sys; fd=os.open(sys.argv[1], os.O_WRONLY); os.write(fd, b"exec echo caf\xe9\n")' "$SB/ctl"
    assert_contains "$(rd "$SB/error")" "not UTF-8" "error after latin-1 text"
    assert_eq "$n0" "$(nexecs "$SB")" "execs after refused bytes"
}

case_multi_line_write_runs_in_order() {
    mksb multi
    printf 'exec echo one\nexec echo two\n\nexec echo three\n' | w1 "$SB/ctl"
    assert_eq 3 "$(nexecs "$SB")" "execs from one write"
    assert_file_eq "$SB/exec/1/stdout" $'one\n'
    assert_file_eq "$SB/exec/2/stdout" $'two\n'
    assert_file_eq "$SB/exec/3/stdout" $'three\n'
    # a bad line in the middle: the write fails with EINVAL, the bad line and the ones
    # after it do not run (the lines before it may have run, in order, or the whole
    # write may have been refused)
    printf 'exec echo four\nbogus line\nexec echo six\n' | w1_fails EINVAL "$SB/ctl"
    assert_contains "$(rd "$SB/error")" "bogus line" "error after a multi-line write"
    local n
    n=$(nexecs "$SB")
    case $n in
    3) it_log "a multi-line write with a bad line ran none of its lines" ;;
    4) assert_file_eq "$SB/exec/4/cmd" $'echo four\n' ;;
    *) fail "$n execs after a write with a bad middle line (expected 3 or 4)" ;;
    esac
    # the next write works normally
    printf 'exec echo seven\n' | w1 "$SB/ctl"
    assert_eq $((n + 1)) "$(nexecs "$SB")" "execs after the next write"
    assert_file_eq "$SB/exec/$((n + 1))/stdout" $'seven\n'
}

case_line_split_across_writes() {
    mksb split
    ctl "$SB" start
    local n0 counts
    n0=$(nexecs "$SB")
    # one open, four write(2)s; after each, the number of execs (no fork in between)
    counts=$(fsop frags "$SB/ctl" 0.3 'exec echo sp' 'lit-' 'line\nexec echo sec' 'ond' | tr '\n' ' ')
    assert_eq "$n0 $n0 $((n0 + 1)) $((n0 + 1)) " "$counts" "execs after each fragment"
    # the close ran the unterminated last line, once
    assert_eq $((n0 + 2)) "$(nexecs "$SB")" "execs after the close"
    assert_file_eq "$SB/exec/$((n0 + 1))/stdout" $'split-line\n'
    assert_file_eq "$SB/exec/$((n0 + 2))/stdout" $'second\n'
    # an unterminated line written with >: runs at close, once
    must bash -c 'printf "exec echo noeol" > "$1/ctl"' _ "$SB"
    assert_eq $((n0 + 3)) "$(nexecs "$SB")" "execs after an unterminated write"
    assert_file_eq "$SB/exec/$((n0 + 3))/stdout" $'noeol\n'
}

# A shell script holding ctl open (exec 9>ctl) runs other programs between the
# fragments of a line: they inherit the descriptor and close it when they exit. The
# line must still run once, whole, when its newline arrives.
case_line_split_with_forks_in_between() {
    mksb splitfork
    ctl "$SB" start
    local n0
    n0=$(nexecs "$SB")
    (
        exec 9>"$SB/ctl" || exit 1
        printf 'exec echo sp' >&9 || fail "first fragment"
        /bin/true # a child that inherits fd 9 and closes it at exit
        sleep 0.3
        [ "$(nexecs "$SB")" = "$n0" ] || fail "a fragment without newline ran when a child holding the fd exited: $(rd "$SB/exec/$((n0 + 1))/cmd")"
        printf 'lit\n' >&9 || fail "second fragment failed: $(rd "$SB/error")"
        exec 9>&-
    ) || exit 1
    assert_eq $((n0 + 1)) "$(nexecs "$SB")" "execs after the line"
    assert_file_eq "$SB/exec/$((n0 + 1))/stdout" $'split\n'
}

case_truncate_and_append_opens() {
    mksb opens
    must bash -c 'echo "exec echo trunc" > "$1/ctl"' _ "$SB"
    must bash -c 'echo "exec echo append" >> "$1/ctl"' _ "$SB"
    # the shell's `: >` (O_TRUNC, no write) is harmless
    must bash -c ': > "$1/ctl"' _ "$SB"
    assert_eq 2 "$(nexecs "$SB")" "execs after > and >>"
    assert_file_eq "$SB/exec/1/stdout" $'trunc\n'
    assert_file_eq "$SB/exec/2/stdout" $'append\n'
    # tee and cp of a file of commands work as well
    printf 'exec echo from-cp\n' >"$IT_WORK/cmds.txt"
    must cp "$IT_WORK/cmds.txt" "$SB/ctl"
    must bash -c 'echo "exec echo from-tee" | tee "$1/ctl" >/dev/null' _ "$SB"
    assert_file_eq "$SB/exec/3/stdout" $'from-cp\n'
    assert_file_eq "$SB/exec/4/stdout" $'from-tee\n'
}

case_crlf_and_blanks() {
    mksb crlf
    # a trailing CR (a file edited on Windows) is not part of the command
    must bash -c 'printf "exec echo crlf\r\n" > "$1/ctl"' _ "$SB"
    assert_file_eq "$SB/exec/1/stdout" $'crlf\n'
}

it_case case_exec_and_execv
it_case case_ctrl_c_on_blocked_wait
it_case case_read_ctl_gives_id_and_latest_exec
it_case case_start_wait_stop_with_grace
it_case case_spec_commands_take_effect
it_case case_snapshot_appends_id
it_case case_malformed_lines_fail_einval_and_quote
it_case case_multi_line_write_runs_in_order
it_case case_line_split_across_writes
it_case case_line_split_with_forks_in_between
it_case case_truncate_and_append_opens
it_case case_crlf_and_blanks
it_done
