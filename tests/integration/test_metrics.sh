#!/usr/bin/env bash
# .metrics: the session's counters as Prometheus text: sandboxes by state, execs,
# bytes, and calls by rpc (checked against the backend's own call counts).
. "$(dirname "$0")/lib.sh"
it_start

metrics() { rd "$MNT/.metrics"; }
# metric NAME_WITH_LABELS: its value (empty when absent)
metric() { metrics | awk -v k="$1" '$1 == k { print $2 }'; }

case_prometheus_text_format() {
    local m bad
    mksb fmt
    ctl "$SB" 'exec echo x'
    assert_file_eq "$SB/stdout" $'x\n'
    m=$(metrics) || exit 1
    assert_ne "" "$m" ".metrics"
    # every line is a comment (# HELP/# TYPE) or `name{labels} value`
    bad=$(printf '%s\n' "$m" | grep -Ev '^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .+$' |
        grep -Ev '^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"]*"(,[a-zA-Z_][a-zA-Z0-9_]*="[^"]*")*\})? -?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$')
    assert_eq "" "$bad" "lines of .metrics that are not Prometheus text"
    # a TYPE for every metric family used
    local fam
    for fam in $(printf '%s\n' "$m" | grep -v '^#' | sed 's/[{ ].*//' | sort -u); do
        printf '%s\n' "$m" | grep -q "^# TYPE $fam \(counter\|gauge\|histogram\|summary\|untyped\)$" ||
            fail "no TYPE line for $fam"
    done
    assert_match "$m" 'rpc="' "calls by rpc"
    assert_match "$m" 'state="' "sandboxes by state"
    # read-only
    must_fail "" bash -c 'echo x > "$1/.metrics"' _ "$MNT"
}

case_counts_follow_activity() {
    local e0 e1 o0 o1 w0 w1 u0 r0
    e0=$(metric cwsfs_execs_total)
    o0=$(metric cwsfs_output_bytes_total)
    w0=$(metric cwsfs_file_written_bytes_total)
    [ -n "$e0" ] && [ -n "$o0" ] && [ -n "$w0" ] || fail "missing counters: $(metrics | grep -v '^#')"
    u0=$(metric 'cwsfs_sandboxes{state="unstarted"}')
    r0=$(metric 'cwsfs_sandboxes{state="running"}')
    mksb m1
    mksb m2
    assert_eq $((u0 + 2)) "$(metric 'cwsfs_sandboxes{state="unstarted"}')" "unstarted sandboxes after two mkdirs"
    ctl "$MNT/m1" 'exec head -c 10000 /dev/zero' 'exec echo 12345'
    assert_file_eq "$MNT/m1/exec/2/stdout" $'12345\n'
    rd "$MNT/m1/exec/1/exit" >/dev/null || exit 1
    e1=$(metric cwsfs_execs_total)
    o1=$(metric cwsfs_output_bytes_total)
    assert_eq $((e0 + 2)) "$e1" "execs after two execs"
    [ "$o1" -ge $((o0 + 10006)) ] || fail "output bytes went from $o0 to $o1 after 10006 bytes of output"
    assert_eq $((r0 + 1)) "$(metric 'cwsfs_sandboxes{state="running"}')" "running sandboxes"
    assert_eq $((u0 + 1)) "$(metric 'cwsfs_sandboxes{state="unstarted"}')" "unstarted sandboxes"
    head -c 4096 /dev/urandom >"$IT_WORK/4k"
    must cp "$IT_WORK/4k" "$MNT/m1/root/4k"
    w1=$(metric cwsfs_file_written_bytes_total)
    [ "$w1" -ge $((w0 + 4096)) ] || fail "file bytes written went from $w0 to $w1 after a 4096-byte cp"
    ctl "$MNT/m1" "stop 0" wait
    assert_eq $((r0)) "$(metric 'cwsfs_sandboxes{state="running"}')" "running sandboxes after stop"
    [ "$(metric 'cwsfs_sandboxes{state="terminated"}')" -ge 1 ] || fail "no terminated sandbox counted"
}

# The mount's calls by rpc agree with what the backend counted (this file's backend
# serves only this mount); GetSandbox and ListSandboxes may be polled in between.
case_calls_by_rpc_match_backend() {
    mksb m3
    ctl "$MNT/m3" start 'exec echo a'
    assert_file_eq "$MNT/m3/stdout" $'a\n'
    printf 'x' >"$IT_WORK/x"
    must cp "$IT_WORK/x" "$MNT/m3/root/x"
    rd "$MNT/m3/root/x" >/dev/null || exit 1
    sleep 0.5
    local rpc mine theirs m
    m=$(metrics) || exit 1
    for rpc in CreateSandbox DeleteSandbox Exec StreamExec WriteFile ReadFile StreamLogs; do
        mine=$(printf '%s\n' "$m" | awk -v k="cwsfs_rpc_calls_total{rpc=\"$rpc\"}" '$1 == k { print $2 }')
        theirs=$(calls_of "$rpc")
        [ -n "$mine" ] || mine=0
        assert_eq "$theirs" "$mine" "cwsfs_rpc_calls_total{rpc=\"$rpc\"} vs the backend's count"
    done
    it_log "metrics: $(printf '%s\n' "$m" | grep rpc_calls | tr '\n' ' ')"
    it_log "backend: $(calls_all)"
}

it_case case_prometheus_text_format
it_case case_counts_follow_activity
it_case case_calls_by_rpc_match_backend
it_done
