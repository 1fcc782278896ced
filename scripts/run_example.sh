#!/usr/bin/env bash
# The main job: learn a digits embedding with `caffe train` on N-pair batches and
# judge it on digits it never saw.
#   1. builds the fork (scripts/build.sh) and installs the example's Python packages
#   2. data: scikit-learn's digits; train on 0-4, hold out 5-9 (unseen) and 20% of
#      0-4 (seen); training batches of 5 classes x 2, 50 reshuffled epochs (HDF5)
#   3. caffe train: the N-pair net (models/digits/solver.prototxt)
#   4. caffe train: the softmax-classifier baseline, same trunk and batches
#   5. evaluate: Recall@1/2/4/8 and NMI of N-pair / untrained / softmax nets
#      (and raw pixels) on both held-out splits -> runs/digits/metrics.json
#   6. plots: training curves and t-SNE maps of the held-out embeddings
# Everything goes to runs/digits/ (remade each run). Optional environment:
#   NPAIR_GPU=0          train on that GPU (a CUDA build of the fork)
#   NPAIR_SKIP_BUILD=1   use the existing build/ as it is
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
run=runs/digits
start=$(date +%s)
step() { echo; echo "==== run_example [$(( $(date +%s) - start ))s] $*"; }

if [[ -z ${NPAIR_SKIP_BUILD:-} ]]; then
  step "building the fork (scripts/build.sh)"
  bash scripts/build.sh
fi
source build/env.sh
source scripts/python_env.sh
"$PYTHON" -m pip install -q --disable-pip-version-check --root-user-action=ignore \
  -r python/npair_examples/requirements.txt
export PYTHONPATH="$root/python${PYTHONPATH:+:$PYTHONPATH}"
export GLOG_logtostderr=1   # caffe logs to the terminal (and the tee'd file) only
gpu=(); [[ -n ${NPAIR_GPU:-} ]] && gpu=(-gpu "$NPAIR_GPU")
py() { "$PYTHON" -m "npair_examples.$1" "${@:2}"; }

rm -rf "$run"
mkdir -p "$run"

step "1/5 data: scikit-learn digits in N-pair batches -> $run/data"
py digits --out "$run/data" --train-classes 0-4 --epochs 50

step "2/5 caffe train: N-pair embedding (log: $run/npair_train.log)"
# The terminal shows caffe's log from "Solving" on (the net set-up is in the file).
caffe train --solver=models/digits/solver.prototxt "${gpu[@]}" 2>&1 \
  | tee "$run/npair_train.log" | sed -n '/Solving/,$p' \
  || { echo "caffe train failed; the end of $run/npair_train.log:"; tail -30 "$run/npair_train.log"; exit 1; }

step "3/5 caffe train: softmax-classifier baseline, same trunk and batches (log: $run/softmax_train.log)"
caffe train --solver=models/digits/softmax_solver.prototxt "${gpu[@]}" > "$run/softmax_train.log" 2>&1 \
  || { tail -30 "$run/softmax_train.log"; exit 1; }
grep -E "Iteration [0-9]+, Testing|Test net output|Optimization Done" "$run/softmax_train.log" \
  | sed -e 's/^.*\] *//' | tail -4

step "4/5 evaluate on held-out digits"
py evaluate --deploy models/digits/deploy.prototxt --data "$run/data/eval.npz" \
  --blob embed_norm --pixels \
  --model npair="$run/npair_iter_3000.caffemodel" \
  --model untrained= \
  --model softmax="$run/softmax_iter_3000.caffemodel" \
  --out "$run/metrics.json" --embeddings "$run/embeddings.npz"

step "5/5 plots"
py plot_log "$run/npair_train.log" --out "$run/training.png" \
  --title "digits 0-4, N-pair batches 5x2: training (lines) and unseen digits 5-9 (dots)"
py plot_embedding "$run/embeddings.npz" --split unseen --metrics "$run/metrics.json" \
  --models npair,untrained,softmax,pixels --out "$run/embedding_unseen.png"
py plot_embedding "$run/embeddings.npz" --split seen --metrics "$run/metrics.json" \
  --models npair,untrained,softmax,pixels --out "$run/embedding_seen.png"

step "done in $(( $(date +%s) - start ))s. In $run/:"
echo "  metrics.json           Recall@1/2/4/8 and NMI, splits unseen (digits 5-9) and seen"
echo "  training.png           loss and in-batch R@1 against iteration"
echo "  embedding_unseen.png   t-SNE of the unseen digits' embeddings, per model"
echo "  embedding_seen.png     the same for the held-out samples of digits 0-4"
echo "  npair_train.log, softmax_train.log, *.caffemodel, data/"
