#!/usr/bin/env bash
# The scripts in examples/ do their work through a real mount and clean up after
# themselves. (examples/demo.sh is the README's one-command setup and runs
# run-python-eval.sh; it builds and mounts by itself, so it is not run here.)
. "$(dirname "$0")/lib.sh"
it_start
EX=$IT_TOP/examples

# run_example SCRIPT ARGS...: run it with a timeout, output in IT_OUT; fail on non-zero.
run_example() {
    IT_MUST_TIMEOUT=120 must "$@"
    printf '%s\n' "$IT_OUT" | sed 's/^/#   | /'
}

case_run_python_eval() {
    local out=$IT_WORK/eval-out
    mkdir -p "$out"
    calls_mark
    run_example "$EX/run-python-eval.sh" "$MNT" "$out"
    assert_contains "$IT_OUT" "epoch 2: fitting 100 points" "eval output"
    assert_contains "$IT_OUT" "slope=3.002" "eval output"
    local r
    r=$(cat "$out/result.json") || fail "no result.json"
    assert_contains "$r" '"n": 100' "result.json"
    assert_contains "$r" '"slope": 3.0024' "result.json"
    assert_eq 1 "$(calls_since CreateSandbox)" "sandboxes created by the eval example"
    assert_eq 1 "$(calls_since DeleteSandbox)" "sandboxes deleted by the eval example"
    assert_eq "" "$(ls "$MNT")" "sandboxes left by the eval example"
}

case_parallel_jobs() {
    calls_mark
    run_example "$EX/parallel-jobs.sh" "$MNT" 4 200000
    assert_contains "$IT_OUT" "total: 17984 primes below 200000" "parallel-jobs total"
    assert_eq 4 "$(printf '%s\n' "$IT_OUT" | grep -c '^job [0-9] ')" "job lines"
    assert_eq 4 "$(calls_since CreateSandbox)" "sandboxes created by parallel-jobs"
    assert_eq 4 "$(calls_since DeleteSandbox)" "sandboxes deleted by parallel-jobs"
    assert_eq "" "$(ls "$MNT")" "sandboxes left by parallel-jobs"
    # more jobs than cores, with a small range
    run_example "$EX/parallel-jobs.sh" "$MNT" 8 1000
    assert_contains "$IT_OUT" "total: 168 primes below 1000" "parallel-jobs with 8 jobs"
    assert_eq "" "$(ls "$MNT")" "sandboxes left by parallel-jobs"
}

case_watch_job() {
    calls_mark
    run_example "$EX/watch-job.sh" "$MNT" 4
    assert_contains "$IT_OUT" "step 4/4 loss=25" "watch-job logs"
    assert_contains "$IT_OUT" "finished" "watch-job logs"
    assert_match "$IT_OUT" "checkpoint while running: step [0-9]" "watch-job checkpoint"
    assert_match "$IT_OUT" "snapshot: [A-Za-z0-9._-]+" "watch-job snapshot"
    assert_contains "$IT_OUT" "final status: completed 0" "watch-job status"
    assert_match "$IT_OUT" "lifecycle: .*running.*completed 0" "watch-job events"
    assert_eq 1 "$(calls_since CreateFileSystemSnapshot)" "snapshots by watch-job"
    assert_eq "" "$(ls "$MNT")" "sandboxes left by watch-job"
}

case_examples_fail_cleanly() {
    # a failing job makes the example fail (non-zero) and still removes its sandboxes
    must_fail "usage" "$EX/parallel-jobs.sh"
    must_fail "usage" "$EX/run-python-eval.sh"
    must_fail "usage" "$EX/watch-job.sh"
    must_fail "" "$EX/parallel-jobs.sh" "$MNT" 2 not-a-number
    assert_eq "" "$(ls "$MNT")" "sandboxes left by a failed example"
}

it_case case_run_python_eval
it_case case_parallel_jobs
it_case case_watch_job
it_case case_examples_fail_cleanly
it_done
