#!/usr/bin/env bash
# exec/N: stdout, stderr, exit, status, cmd, the history, the latest-exec links,
# streaming while the command runs, O_NONBLOCK, Ctrl-C on a blocked reader, and 200
# blocked readers while the mount still answers.
. "$(dirname "$0")/lib.sh"
it_start

case_stdout_stderr_exit_status_cmd() {
    mksb basic
    ctl "$SB" 'exec echo out1; echo err1 >&2; echo out2; exit 7'
    assert_file_eq "$SB/exec/1/stdout" $'out1\nout2\n'
    assert_file_eq "$SB/exec/1/stderr" $'err1\n'
    assert_file_eq "$SB/exec/1/exit" $'7\n'
    assert_file_eq "$SB/exec/1/status" $'exited 7\n'
    assert_file_eq "$SB/exec/1/cmd" $'echo out1; echo err1 >&2; echo out2; exit 7\n'
    # output stays readable from offset 0, as often as wanted
    assert_file_eq "$SB/exec/1/stdout" $'out1\nout2\n'
    # st_size is the number of bytes produced
    assert_eq 10 "$(stat -c %s "$SB/exec/1/stdout")" "st_size of stdout"
}

case_exit_codes() {
    mksb codes
    ctl "$SB" "exec true" "exec false" "exec exit 255" "exec no-such-command-xyz" \
        'exec kill -9 $$' 'execv ["/no/such/binary"]'
    assert_file_eq "$SB/exec/1/exit" $'0\n'
    assert_file_eq "$SB/exec/2/exit" $'1\n'
    assert_file_eq "$SB/exec/3/exit" $'255\n'
    assert_file_eq "$SB/exec/4/exit" $'127\n'
    assert_contains "$(rd "$SB/exec/4/stderr")" "no-such-command-xyz" "stderr of a missing command"
    assert_file_eq "$SB/exec/5/exit" $'137\n'
    assert_match "$(rd "$SB/exec/6/exit")" '^12[67]$' "exit of a missing binary via execv"
}

case_history_and_latest_links() {
    mksb hist
    assert_not_exists "$SB/stdout"
    local i
    for i in 1 2 3; do
        ctl "$SB" "exec echo run-$i"
        assert_eq "exec/$i/stdout" "$(readlink "$SB/stdout")" "stdout link after exec $i"
        assert_eq "exec/$i/stderr" "$(readlink "$SB/stderr")" "stderr link after exec $i"
        assert_eq "exec/$i/exit" "$(readlink "$SB/exit")" "exit link after exec $i"
        assert_file_eq "$SB/stdout" "run-$i"$'\n'
    done
    assert_eq "1 2 3" "$(ls "$SB/exec" | sort -n | tr '\n' ' ' | sed 's/ $//')" "exec/ listing"
    for i in 1 2 3; do
        assert_file_eq "$SB/exec/$i/stdout" "run-$i"$'\n'
        assert_file_eq "$SB/exec/$i/exit" $'0\n'
    done
    assert_not_exists "$SB/exec/4"
    assert_not_exists "$SB/exec/0"
    assert_not_exists "$SB/exec/x"
}

case_stdout_streams_before_exit() {
    mksb stream
    ctl "$SB" start
    local t0 first ms all
    t0=$(now_ms)
    ctl "$SB" 'exec echo first; sleep 3; echo second'
    # the first line arrives while the command still runs
    first=$(timeout "$(t 2)" head -n 1 "$SB/stdout") || fail "no first line within $(t 2) s (rc $?)"
    ms=$(($(now_ms) - t0))
    assert_eq first "$first" "first line"
    assert_eq "running" "$(rd "$SB/exec/1/status")" "status while the command runs"
    # cat follows the command to its end
    all=$(rd "$SB/stdout") || exit 1
    assert_eq $'first\nsecond' "$all" "whole stdout"
    [ $(($(now_ms) - t0)) -ge 2500 ] || fail "cat ended after $(($(now_ms) - t0)) ms, before the command's end"
    it_log "first line after $ms ms"
    assert_file_eq "$SB/exec/1/status" $'exited 0\n'
}

case_exit_blocks_until_end() {
    mksb exitblock
    ctl "$SB" 'exec sleep 2; exit 5'
    local t0
    t0=$(now_ms)
    assert_file_eq "$SB/exit" $'5\n'
    [ $(($(now_ms) - t0)) -ge 1000 ] || fail "exit read after $(($(now_ms) - t0)) ms: did not block"
}

case_nonblocking_read_gives_eagain() {
    mksb nonblock
    ctl "$SB" 'exec echo x; sleep 30'
    wait_for 5 test -s "$SB/exec/1/stdout"
    local r
    r=$(fsop nbread "$SB/exec/1/stdout") || fail "nbread: $r"
    assert_eq "EAGAIN 2" "$r" "O_NONBLOCK read at the end of a running exec's stdout"
    r=$(fsop nbread "$SB/exec/1/stderr") || fail "nbread: $r"
    assert_eq "EAGAIN 0" "$r" "O_NONBLOCK read of an empty running stderr"
    ctl "$SB" 'exec echo done'
    assert_file_eq "$SB/exec/2/exit" $'0\n'
    r=$(fsop nbread "$SB/exec/2/stdout") || fail "nbread: $r"
    assert_eq "EOF 5" "$r" "O_NONBLOCK read of an ended exec"
    # dd iflag=nonblock too
    local out
    out=$(timeout "$(t 5)" dd if="$SB/exec/1/stdout" iflag=nonblock bs=64k 2>&1 >/dev/null)
    assert_contains "$out" "Resource temporarily unavailable" "dd iflag=nonblock at the end"
}

case_ctrl_c_on_blocked_cat() {
    mksb ctrlc
    ctl "$SB" 'exec sleep 30'
    local out=$IT_WORK/ctrlc.out pid t0 ms i
    # job control on, so the background cat gets SIGINT as from a terminal (a
    # non-interactive shell would start it with SIGINT ignored)
    set -m
    cat "$SB/exec/1/stdout" >"$out" 2>&1 &
    pid=$!
    set +m
    sleep 1
    kill -0 $pid 2>/dev/null || fail "cat of a running exec's stdout did not block: $(cat "$out")"
    t0=$(now_ms)
    kill -INT $pid
    for ((i = 0; i < 40 * IT_SCALE; i++)); do
        kill -0 $pid 2>/dev/null || break
        sleep 0.05
    done
    ms=$(($(now_ms) - t0))
    if kill -0 $pid 2>/dev/null; then
        kill -KILL $pid
        fail "cat still blocked $ms ms after SIGINT"
    fi
    it_log "cat returned $ms ms after SIGINT"
    # the exec is unaffected
    assert_file_eq "$SB/exec/1/status" $'running\n'
    # and a second reader still works
    ctl "$SB" 'exec echo after'
    assert_file_eq "$SB/exec/2/stdout" $'after\n'
}

case_200_blocked_readers_and_ls_answers() {
    mksb crowd
    ctl "$SB" 'exec sleep 60' 'exec echo hi; sleep 60'
    local pids=() i n p t0 ms
    for ((i = 0; i < 200; i++)); do
        if ((i % 2)); then
            cat "$SB/exec/1/stdout" >/dev/null 2>&1 &
        else
            cat "$SB/exec/2/stdout" >/dev/null 2>&1 &
        fi
        pids+=($!)
    done
    sleep 2
    n=0
    for i in "${pids[@]}"; do kill -0 "$i" 2>/dev/null && n=$((n + 1)); done
    assert_eq 200 "$n" "readers still blocked after 2 s"
    # the mount still answers promptly
    t0=$(now_ms)
    timeout "$(t 2)" ls "$MNT" >/dev/null || fail "ls MNT did not answer within $(t 2) s with 200 blocked readers"
    timeout "$(t 2)" ls -l "$SB" >/dev/null || fail "ls -l sandbox did not answer within $(t 2) s"
    timeout "$(t 2)" cat "$SB/status" >/dev/null || fail "status did not answer"
    ms=$(($(now_ms) - t0))
    it_log "ls, ls -l, cat status with 200 blocked readers: $ms ms"
    # a new exec and its output work too
    must bash -c 'echo "exec echo still-works" > "$1/ctl"' _ "$SB"
    assert_file_eq "$SB/exec/3/stdout" $'still-works\n'
    # another sandbox works too
    mksb crowd2
    ctl "$SB" 'exec echo other'
    assert_file_eq "$SB/stdout" $'other\n'
    # the readers go when killed (stderr off: bash reports every killed job)
    {
        kill -KILL "${pids[@]}"
        for ((i = 0; i < 100 * IT_SCALE; i++)); do
            n=0
            for p in "${pids[@]}"; do kill -0 "$p" && n=$((n + 1)); done
            [ $n -eq 0 ] && break
            sleep 0.1
        done
        wait
    } 2>/dev/null
    [ $n -eq 0 ] || fail "$n readers still alive 10 s after SIGKILL"
    ctl "$MNT/crowd" "stop 0"
}

case_large_output_intact() {
    mksb bigout
    ctl "$SB" 'exec seq 1 400000'
    local want got
    want=$(seq 1 400000 | md5sum)
    got=$(rd "$SB/stdout" | md5sum) || exit 1
    assert_eq "$want" "$got" "md5 of 2.6 MB of output"
    assert_eq "$(seq 1 400000 | wc -c)" "$(stat -c %s "$SB/exec/1/stdout")" "st_size of a large stdout"
    # interleaved stdout and stderr stay separate
    ctl "$SB" 'exec for i in $(seq 1 2000); do echo o$i; echo e$i >&2; done'
    assert_eq "$(seq 1 2000 | sed 's/^/o/' | md5sum)" "$(rd "$SB/exec/2/stdout" | md5sum)" "interleaved stdout"
    assert_eq "$(seq 1 2000 | sed 's/^/e/' | md5sum)" "$(rd "$SB/exec/2/stderr" | md5sum)" "interleaved stderr"
}

case_binary_output_and_no_newline() {
    mksb binout
    ctl "$SB" 'exec printf "a\0b\377\n\0"' 'exec printf no-newline'
    assert_eq "$(printf 'a\0b\377\n\0' | od -An -tx1)" "$(rd "$SB/exec/1/stdout" | od -An -tx1)" "binary output"
    assert_file_eq "$SB/exec/2/stdout" "no-newline"
}

case_concurrent_execs() {
    mksb parallel
    local i
    for i in 1 2 3 4 5; do ctl "$SB" "exec sleep 1; echo job-$i"; done
    for i in 1 2 3 4 5; do assert_file_eq "$SB/exec/$i/stdout" "job-$i"$'\n'; done
}

count_many() {
    local f n=0
    for f in "$MNT"/many-*; do [ -e "$f" ] && n=$((n + 1)); done
    echo $n
}

case_many_sandboxes_at_once() {
    local i n=24
    for ((i = 1; i <= n; i++)); do
        (mkdir "$MNT/many-$i" && echo "exec echo sandbox-$i" >"$MNT/many-$i/ctl") &
    done
    wait
    for ((i = 1; i <= n; i++)); do
        assert_file_eq "$MNT/many-$i/stdout" "sandbox-$i"$'\n'
    done
    assert_eq $n "$(count_many)" "sandboxes listed"
    for ((i = 1; i <= n; i++)); do rm -r "$MNT/many-$i" & done
    wait
    assert_eq 0 "$(count_many)" "sandboxes left after rm -r"
}

it_case case_stdout_stderr_exit_status_cmd
it_case case_exit_codes
it_case case_history_and_latest_links
it_case case_stdout_streams_before_exit
it_case case_exit_blocks_until_end
it_case case_nonblocking_read_gives_eagain
it_case case_ctrl_c_on_blocked_cat
it_case case_200_blocked_readers_and_ls_answers
it_case case_large_output_intact
it_case case_binary_output_and_no_newline
it_case case_concurrent_execs
it_case case_many_sandboxes_at_once
it_done
