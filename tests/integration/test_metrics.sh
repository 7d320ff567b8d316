#!/usr/bin/env bash
# .metrics: the session's counters as Prometheus text: sandboxes by state, execs,
# bytes, and calls by rpc (checked against the backend's own call counts); per-rpc
# latency histograms, errors by code, what is in flight. And log_level=: at debug, one
# line per API call in logfile=, never the key.
. "$(dirname "$0")/lib.sh"
KEY="it-metrics-key-$$-$RANDOM-secret"
(umask 077 && printf '%s\n' "$KEY" >"$IT_WORK/key")
DEBUG_LOG=$IT_WORK/debug.log
# The backend takes any key; the mount sends this one with every call.
it_start "auth=cwsandbox,api_key_file=$IT_WORK/key,log_level=debug,logfile=$DEBUG_LOG"

metrics() { rd "$MNT/.metrics"; }
# metric NAME_WITH_LABELS: its value (empty when absent)
metric() { metrics | awk -v k="$1" '$1 == k { print $2 }'; }
# mval TEXT NAME_WITH_LABELS: its value in TEXT, 0 when absent
mval() { printf '%s\n' "$1" | awk -v k="$2" '$1 == k { v = $2 } END { print v + 0 }'; }
# histogram_problems < TEXT: what is wrong with the cwsfs_rpc_duration_seconds series
histogram_problems() {
    awk '
    function rpc(s) { match(s, /rpc="[^"]*"/); return substr(s, RSTART, RLENGTH) }
    function le(s) { match(s, /le="[^"]*"/); return substr(s, RSTART + 4, RLENGTH - 5) }
    /^cwsfs_rpc_duration_seconds_bucket\{/ {
        r = rpc($1); b = le($1)
        if (r in inf) print r ": a bucket after +Inf"
        if (b == "+Inf") inf[r] = $2
        else if (b !~ /^[0-9.]+$/ || (r in lastle && b + 0 <= lastle[r])) print r ": le " b " out of order"
        if (r in last && $2 + 0 < last[r]) print r ": bucket le=" b " below the one before"
        last[r] = $2 + 0; lastle[r] = b + 0
    }
    /^cwsfs_rpc_duration_seconds_count\{/ { cnt[rpc($1)] = $2 }
    /^cwsfs_rpc_duration_seconds_sum\{/ { sum[rpc($1)] = 1 }
    END {
        for (r in cnt) {
            if (!(r in inf)) print r ": no +Inf bucket"
            else if (inf[r] != cnt[r]) print r ": +Inf bucket " inf[r] " but _count " cnt[r]
            if (!(r in sum)) print r ": no _sum"
        }
        for (r in inf) if (!(r in cnt)) print r ": no _count"
    }'
}

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
    # a TYPE for every metric family used (a histogram's series carry suffixes)
    local fam base
    for fam in $(printf '%s\n' "$m" | grep -v '^#' | sed 's/[{ ].*//' | sort -u); do
        base=$fam
        case $fam in *_bucket | *_sum | *_count)
            printf '%s\n' "$m" | grep -q "^# TYPE ${fam%_*} histogram$" && base=${fam%_*} ;;
        esac
        printf '%s\n' "$m" | grep -q "^# TYPE $base \(counter\|gauge\|histogram\|summary\|untyped\)$" ||
            fail "no TYPE line for $fam"
    done
    # histograms: buckets cumulative in le order, ending with +Inf equal to _count
    bad=$(printf '%s\n' "$m" | histogram_problems)
    assert_eq "" "$bad" "histogram series"
    # promtool, when installed, has the last word (Debian's prometheus package has it)
    if command -v promtool >/dev/null; then
        printf '%s\n' "$m" | promtool check metrics >"$IT_WORK/promtool.out" 2>&1 ||
            fail "promtool check metrics: $(cat "$IT_WORK/promtool.out")"
    fi
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

# Per-rpc durations, bytes and what is in flight move with the calls made.
case_rpc_series_follow_calls() {
    local m0 m1 rpc
    m0=$(metrics) || exit 1
    mksb h1
    ctl "$SB" start 'exec echo histogram'
    assert_file_eq "$SB/stdout" $'histogram\n'
    head -c 3000 /dev/urandom >"$IT_WORK/3k"
    must cp "$IT_WORK/3k" "$SB/root/3k"
    m1=$(metrics) || exit 1
    for rpc in CreateSandbox StreamExec WriteFile; do
        [ "$(mval "$m1" "cwsfs_rpc_duration_seconds_count{rpc=\"$rpc\"}")" -gt \
            "$(mval "$m0" "cwsfs_rpc_duration_seconds_count{rpc=\"$rpc\"}")" ] ||
            fail "cwsfs_rpc_duration_seconds_count{rpc=\"$rpc\"} did not move"
        assert_match "$m1" "cwsfs_rpc_duration_seconds_bucket\\{rpc=\"$rpc\",le=\"\\+Inf\"\\} [1-9]" "+Inf bucket of $rpc"
        assert_match "$m1" "cwsfs_rpc_duration_seconds_sum\\{rpc=\"$rpc\"\\} [0-9]" "_sum of $rpc"
    done
    # the 3000 bytes went out in the WriteFile request (base64 in JSON: more)
    [ "$(mval "$m1" 'cwsfs_rpc_bytes_total{rpc="WriteFile",direction="sent"}')" -ge \
        $(($(mval "$m0" 'cwsfs_rpc_bytes_total{rpc="WriteFile",direction="sent"}') + 3000)) ] ||
        fail "WriteFile bytes sent did not grow by 3000: $(printf '%s\n' "$m1" | grep WriteFile)"
    assert_eq 0 "$(mval "$m1" 'cwsfs_rpc_in_flight{rpc="CreateSandbox"}')" "CreateSandbox calls in flight once done"
    assert_eq 0 "$(mval "$m1" 'cwsfs_rpc_in_flight_bytes{rpc="CreateSandbox",direction="sent"}')" "CreateSandbox bytes in flight once done"
    # a command that runs holds its StreamExec in flight, with the bytes it moved so far
    ctl "$SB" 'exec echo started; sleep 30'
    assert_eq started "$(timeout "$(t 10)" head -c 7 "$SB/exec/2/stdout")" "the long exec's first output"
    sleep 0.3 # bytes of running calls reach the counters every 100 ms
    m1=$(metrics) || exit 1
    [ "$(mval "$m1" 'cwsfs_rpc_in_flight{rpc="StreamExec"}')" -ge 1 ] ||
        fail "no StreamExec in flight while a command runs: $(printf '%s\n' "$m1" | grep in_flight)"
    [ "$(mval "$m1" 'cwsfs_rpc_in_flight_bytes{rpc="StreamExec",direction="received"}')" -gt 0 ] ||
        fail "no bytes in flight for the running StreamExec: $(printf '%s\n' "$m1" | grep in_flight)"
    ctl "$SB" "stop 0" wait
    assert_eq "" "$(printf '%s\n' "$(metrics)" | histogram_problems)" "histogram series"
}

# A failing call is counted under its rpc and Connect code: the local runner has no GPU,
# so CreateSandbox fails with resource_exhausted (after its retries).
case_errors_by_code() {
    local e0 e1 k='cwsfs_rpc_errors_total{rpc="CreateSandbox",code="resource_exhausted"}'
    e0=$(mval "$(metrics)" "$k")
    mksb nogpu
    ctl "$SB" "gpu 1"
    ctl_fails "Resource temporarily unavailable" "$SB" start
    e1=$(mval "$(metrics)" "$k")
    assert_eq $((e0 + 1)) "$e1" "$k after a refused create"
    grep -q "api: CreateSandbox call [0-9]*: resource_exhausted " "$DEBUG_LOG" ||
        fail "no debug line for the failed CreateSandbox"
}

# log_level=debug: one line per finished call in logfile=, naming the rpc, its outcome,
# duration and bytes; the key (sent in every call's header) in none of them.
case_debug_log_has_one_line_per_call() {
    local m rpc n lines bad
    mksb dl
    ctl "$SB" start 'exec echo logged'
    assert_file_eq "$SB/stdout" $'logged\n'
    printf 'x' >"$IT_WORK/one"
    must cp "$IT_WORK/one" "$SB/root/one"
    rd "$SB/root/one" >/dev/null || exit 1
    ctl "$SB" "stop 0" wait
    m=$(metrics) || exit 1
    lines=$(grep -c ' DEBUG api: [A-Za-z]* call [0-9]*: ' "$DEBUG_LOG")
    [ "$lines" -gt 0 ] || fail "no per-call lines in $DEBUG_LOG"
    # calls this case waited for: as many lines as finished calls
    for rpc in CreateSandbox StreamExec WriteFile ReadFile DeleteSandbox; do
        n=$(grep -c " DEBUG api: $rpc call [0-9]*: " "$DEBUG_LOG")
        assert_eq "$(mval "$m" "cwsfs_rpc_duration_seconds_count{rpc=\"$rpc\"}")" "$n" "debug lines for $rpc"
    done
    bad=$(grep ' DEBUG api: [A-Za-z]* call [0-9]*: ' "$DEBUG_LOG" |
        grep -Ev ': [a-z_]+ \(http [0-9]+\) in [0-9]+ ms, [0-9]+ attempts?, sent [0-9]+ B, received [0-9]+ B' | head -3)
    assert_eq "" "$bad" "per-call lines without outcome, duration or bytes"
    assert_not_contains "$(cat "$DEBUG_LOG")" "$KEY" "the debug log"
    assert_not_contains "$(cat "$DEBUG_LOG")" "Bearer" "the debug log"
    it_log "$(grep -m 3 ' DEBUG api: ' "$DEBUG_LOG")"
}

# log_level= takes four words; another is refused before mounting.
case_log_level_words() {
    it_mount_try "$IT_WORK/m-bad" "log_level=verbose" && fail "mounted with log_level=verbose"
    assert_contains "$(cat "$IT_LAST_LOG")" "log_level=" "message for a bad level"
    it_mount "$IT_WORK/m-warn" "log_level=warn,logfile=$IT_WORK/warn.log"
    mksb w "$IT_WORK/m-warn"
    ctl "$SB" 'exec true'
    it_unmount "$IT_WORK/m-warn" || fail "unmount"
    assert_not_contains "$(cat "$IT_WORK/warn.log")" " INFO " "log at warn"
    assert_not_contains "$(cat "$IT_WORK/warn.log")" " DEBUG " "log at warn"
}

it_case case_prometheus_text_format
it_case case_counts_follow_activity
it_case case_calls_by_rpc_match_backend
it_case case_rpc_series_follow_calls
it_case case_errors_by_code
it_case case_debug_log_has_one_line_per_call
it_case case_log_level_words
it_done
