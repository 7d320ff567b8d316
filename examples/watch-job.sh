#!/usr/bin/env bash
# Run a job as a sandbox's main command and watch it the way one watches a service:
# follow `logs` until the job ends, read its lifecycle from `events`, check the final
# `status`, then remove the sandbox. While the job runs, peek at the files it writes
# (a checkpoint) through root/, and save a snapshot of its file system.
# Usage: examples/watch-job.sh MOUNTPOINT [STEPS]
set -euo pipefail
mnt=${1:?usage: watch-job.sh MOUNTPOINT [STEPS]}
steps=${2:-5}
sb=$mnt/job-$$
trap '[ -d "$sb" ] && rm -r "$sb"' EXIT

mkdir "$sb"
# The job: a "training" loop writing a checkpoint and printing progress. Each line
# below is one ctl command: spec first, then start.
cat >"$sb/ctl" <<EOF
env STEPS=$steps
workdir /srv
command mkdir -p ckpt; for i in \$(seq 1 \$STEPS); do echo "step \$i/\$STEPS loss=\$((100 / i))"; echo \$i > ckpt/latest; sleep 0.5; done; echo finished
start
EOF
echo "sandbox $(cat "$sb/id") is $(cat "$sb/status")"
head -n 1 "$sb/logs"                          # the first line, as soon as it is there
echo "checkpoint while running: step $(cat "$sb/root/srv/ckpt/latest")"
echo snapshot >"$sb/ctl"                      # the file system as it is now
echo "snapshot: $(tail -n 1 "$sb/snapshots")"
cat "$sb/logs"                                # the whole output; EOF when the job ends
echo "lifecycle: $(tr '\n' ' ' <"$sb/events")"  # EOF at the terminal state
status=$(cat "$sb/status")
echo "final status: $status"
[ "$status" = "completed 0" ] || { echo "error: $(cat "$sb/error")" >&2; exit 1; }
rm -r "$sb"
