#!/usr/bin/env bash
# Evaluate a Python model in a fresh sandbox, using nothing but files:
#   mkdir a sandbox, copy the evaluation script and its data in, run it, follow its
#   output while it runs, check the exit code, copy the result file out, remove the
#   sandbox (one DeleteSandbox).
# Usage: examples/run-python-eval.sh MOUNTPOINT [OUTPUT_DIR]
# Prints the evaluation's output and leaves result.json in OUTPUT_DIR (default: .).
set -euo pipefail
mnt=${1:?usage: run-python-eval.sh MOUNTPOINT [OUTPUT_DIR]}
out=${2:-.}
sb=$mnt/eval-$$
work=$(mktemp -d)
trap 'rm -rf "$work"; [ -d "$sb" ] && rm -r "$sb"' EXIT

# The job: a tiny "model" (least squares fit) evaluated on a data set.
cat >"$work/eval.py" <<'EOF'
import csv, json, math, sys, time

rows = list(csv.reader(open("/work/data.csv")))[1:]
xs = [float(r[0]) for r in rows]
ys = [float(r[1]) for r in rows]
n = len(xs)
mx, my = sum(xs) / n, sum(ys) / n
slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
icpt = my - slope * mx
for epoch in range(3):                       # pretend to work, printing progress
    print(f"epoch {epoch}: fitting {n} points", flush=True)
    time.sleep(0.3)
rmse = math.sqrt(sum((icpt + slope * x - y) ** 2 for x, y in zip(xs, ys)) / n)
print(f"slope={slope:.3f} intercept={icpt:.3f} rmse={rmse:.4f}", flush=True)
print("warning: this is only a demo", file=sys.stderr)
json.dump({"n": n, "slope": round(slope, 6), "intercept": round(icpt, 6),
           "rmse": round(rmse, 6)}, open("/work/result.json", "w"))
EOF
{
    echo "x,y"
    for i in $(seq 0 99); do echo "$i,$((3 * i + 7 + (i % 5) - 2))"; done
} >"$work/data.csv"

mkdir "$sb"                                   # unstarted: no call yet
echo "env PYTHONUNBUFFERED=1" >"$sb/ctl"      # spec before start
mkdir -p "$sb/root/work"                      # starts the sandbox
cp "$work/eval.py" "$work/data.csv" "$sb/root/work/"
echo 'exec python3 /work/eval.py' >"$sb/ctl"
cat "$sb/stdout"                              # streams until the script exits
code=$(cat "$sb/exit")
if [ "$code" != 0 ]; then
    echo "evaluation failed with exit code $code:" >&2
    cat "$sb/stderr" >&2
    exit 1
fi
cp "$sb/root/work/result.json" "$out/result.json"
echo "result: $(cat "$out/result.json")"
rm -r "$sb"                                   # stops it: one DeleteSandbox
