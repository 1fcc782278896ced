#!/usr/bin/env bash
# Soak: `caffe train` on the digits example (models/digits: conv net -> L2Normalize ->
# NPairMultiClassLoss with the usage block's mining) for 5,000 iterations on CPU, checking
#   - no NaN or inf anywhere: the solver runs with debug_info and display 1, so every
#     iteration logs the mean |value| of every top (and every diff, and every parameter
#     update) of every layer, TRAIN and TEST, and one NaN or inf in a blob shows there;
#     the log is scanned for them, the Train/Test net output lines included;
#   - memory: the resident set size (VmRSS) of the caffe process, sampled every 5 ms as
#     it trains, at iteration 500 and at the last iteration (during its final test
#     pass), with the first sample of every 250 iterations. More than 16 MiB of growth
#     from iteration 500 to the end fails.
#
#   bash scripts/soak.sh [ITERATIONS] [rand]      (default 5000; under a minute here)
#
# The example's mining (the usage block's: HARD negatives, RELATIVE_HARD positives)
# soon keeps no negative in most training batches, so most iterations have loss 0 and no
# gradient (the soak says how many did not); `rand` drops the npair_loss_param block
# (RAND/RAND: every pair kept) so that a gradient flows through the layer every iteration.
#
# Needs the built fork (scripts/build.sh) and the example's Python packages
# (python/npair_examples/requirements.txt). Everything goes to runs/soak/ (remade; the
# log, tens of MB with debug_info, is gzipped at the end). BLAS runs on one thread unless
# OPENBLAS_NUM_THREADS says otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
iters=${1:-5000}
mining=${2:-example}
[[ $mining == example || $mining == rand ]] || { echo "soak: unknown mining $mining" >&2; exit 2; }
out=runs/soak
early=500
# The last sample is taken during the final test pass, which test_interval 250 gives.
(( iters > early && iters % 250 == 0 )) \
  || { echo "soak: ITERATIONS must be a multiple of 250 above $early" >&2; exit 2; }
source build/env.sh
source scripts/python_env.sh
export PYTHONPATH="$(pwd)/python${PYTHONPATH:+:$PYTHONPATH}"
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1} GLOG_logtostderr=1 GLOG_minloglevel=0

rm -rf "$out"
mkdir -p "$out"
echo "soak: data (python -m npair_examples.digits) -> $out/data"
"$PYTHON" -m npair_examples.digits --out "$out/data" > "$out/data.log"

sed "s#runs/digits/data/#$out/data/#" models/digits/train_val.prototxt > "$out/train_val.prototxt"
if [[ $mining == rand ]]; then
  sed -i '/^  npair_loss_param {/,/^  }/d' "$out/train_val.prototxt"
  ! grep -q npair_loss_param "$out/train_val.prototxt" \
    || { echo "soak: could not drop npair_loss_param" >&2; exit 2; }
fi
sed -e "s#^net: .*#net: \"$out/train_val.prototxt\"#" \
    -e "s#^max_iter: .*#max_iter: $iters#" \
    -e "s#^display: .*#display: 1#" \
    -e "s#^test_interval: .*#test_interval: 250#" \
    -e "s#^snapshot_prefix: .*#snapshot_prefix: \"$out/npair\"#" \
    models/digits/solver.prototxt > "$out/solver.prototxt"
printf 'debug_info: true\nsnapshot_after_train: false\n' >> "$out/solver.prototxt"

log="$out/train.log"
echo "soak: caffe train, $iters iterations, $mining mining (log: $log)"
start=$(date +%s)
# caffe train under a small monitor that follows the log line by line (so it knows the
# iteration) and reads the process's VmRSS every 5 ms. It writes "status S", then
# "rss WINDOW KIB" (the first sample of each 250 iterations), "rss last KIB" (the last
# sample at the final iteration) and "peak KIB" (VmHWM) to rss.txt.
"$PYTHON" - "$out/solver.prototxt" "$log" "$iters" > "$out/rss.txt" << 'PY'
import re
import subprocess
import sys
import time

solver, log, iters = sys.argv[1], sys.argv[2], int(sys.argv[3])


def status(pid, key):
    try:
        with open(f'/proc/{pid}/status') as f:
            return next((int(line.split()[1]) for line in f if line.startswith(key + ':')),
                        None)
    except OSError:
        return None


with open(log, 'w') as out, open(log) as follow:
    proc = subprocess.Popen(['caffe', 'train', f'--solver={solver}'], stdout=out,
                            stderr=subprocess.STDOUT)
    iteration, rss_at, last, peak, pending, finished = None, {}, None, None, '', False
    while proc.poll() is None:
        # Sample, then read the log: a sample is kept if the log still had not said
        # "Optimization Done" after it (the net is being freed from then on), and is
        # counted at the iteration known before it.
        rss, hwm, known = status(proc.pid, 'VmRSS'), status(proc.pid, 'VmHWM'), iteration
        pending += follow.read()
        *lines, pending = pending.split('\n')
        for line in lines:
            m = re.search(r'\] Iteration (\d+)', line)
            iteration = int(m.group(1)) if m else iteration
            finished = finished or 'Optimization Done' in line
        if not finished and rss is not None and hwm is not None and known is not None:
            rss_at.setdefault(known // 250 * 250, rss)
            last = rss if known >= iters else last
            peak = max(peak or 0, hwm)
        time.sleep(0.005)
print('status', proc.returncode)
for window in sorted(rss_at):
    print('rss', window, rss_at[window])
if last is not None:
    print('rss last', last)
if peak is not None:
    print('peak', peak)
PY
elapsed=$(( $(date +%s) - start ))
field() { awk -v a="$1" -v b="${2:-}" '$1 == a && (b == "" || $2 == b) {print $NF}' "$out/rss.txt"; }
status=$(field status)
last_rss=$(field rss last)
rss_early=$(field rss "$early")
peak=$(field peak)

fail=0
if [[ $status != 0 ]] || ! grep -q "Optimization Done" "$log"; then
  echo "soak: FAIL caffe train exited with $status"; tail -20 "$log"; fail=1
fi
# nan, -nan, inf, -inf as words (not "info", "inference").
pattern='(^|[^[:alnum:]_])-?(nan|inf)([^[:alnum:]_]|$)'
bad=$(grep -Eci "$pattern" "$log" || true)
forward=$(grep -c '\[Forward\] Layer loss, top blob npair_loss' "$log" || true)
outputs=$(grep -cE '(Train|Test) net output #' "$log" || true)
last=$(grep -o 'Iteration [0-9]*, loss = .*' "$log" | tail -1)
learning=$(grep -oE 'Train net output #[0-9]+: npair_loss = [^ ]+' "$log" \
           | awk '$NF != 0 {n++} END {print n + 0}')
echo "soak: $iters iterations in ${elapsed}s; $forward forward passes of the N-pair layer" \
     "logged with every blob, $outputs output lines; training loss above 0 (a gradient" \
     "through the layer) in $learning iterations; last: $last"
if (( bad > 0 )); then
  echo "soak: FAIL $bad log lines with nan or inf, the first:"
  grep -Ei -m 5 "$pattern" "$log"
  fail=1
else
  echo "soak: no nan or inf in any top, diff, parameter update or output"
fi

echo "soak: VmRSS (KiB), first sample of each 250 iterations:"
awk '$1 == "rss" && $2 != "last" {printf "  %6d  %s\n", $2, $3}' "$out/rss.txt"
if [[ -z $rss_early || -z $last_rss ]]; then
  echo "soak: FAIL no VmRSS sample at iteration $early or $iters"; fail=1
else
  growth=$(( last_rss - rss_early ))
  echo "soak: VmRSS at iteration $early: $rss_early KiB; at iteration $iters: $last_rss KiB" \
       "(growth $growth KiB; peak VmHWM ${peak:-?} KiB)"
  if (( growth > 16384 )); then
    echo "soak: FAIL resident memory grew by more than 16 MiB"; fail=1
  fi
fi
gzip -f "$log"
if (( fail == 0 )); then echo "soak: PASS"; else echo "soak: FAIL"; exit 1; fi
