#!/usr/bin/env bash
# The main job: does the N-pair loss learn an embedding that transfers to classes it
# never saw? CJK characters rendered from Debian's font faces, one class per
# character; the nets train on 2,065 characters and are judged on 500 others.
#   1. builds the fork (scripts/build.sh, which also installs the font packages) and
#      the example's Python packages
#   2. data: python -m npair_examples.glyphs -> runs/glyphs/data (PNG files and
#      `path label` lists; reused when its inputs have not changed)
#   3. caffe train, same trunk, data (NPairImageData, 64 characters x 2) and
#      iterations: N-pair with the usage block's mining, the same with a
#      CrossBatchMemory of past embeddings, a softmax classifier, and Caffe's
#      ContrastiveLoss (models/glyphs/*_solver.prototxt), several at a time
#   4. evaluate every model, the untrained net and raw pixels on the unseen
#      characters: R@1/2/4/8, MAP@R, R-precision, NMI -> runs/glyphs/metrics.json
#   5. convergence: unseen R@1 and MAP@R at every snapshot -> convergence.png
#   6. pictures: training.png, tsne.png, retrieval.png
# Everything but the data goes to runs/glyphs/ (remade each run).
#   --compare            also N-pair with RAND mining, with RAND and a x4 similarity
#                        scale, in the Python fallback layer, and a second weight seed
#                        of every learned model
# Optional environment:
#   NPAIR_SKIP_BUILD=1   use the existing build/ as it is
#   NPAIR_JOBS=N         trainings at a time (default: two per core)
#   NPAIR_GPU=0          train on that GPU (a CUDA build of the fork)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
run=runs/glyphs
start=$(date +%s)
step() { echo; echo "==== run_example [$(( $(date +%s) - start ))s] $*"; }

compare=""
for arg in "$@"; do
  case $arg in
    --compare) compare=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run_example.sh: error: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done

if [[ -z ${NPAIR_SKIP_BUILD:-} ]]; then
  step "building the fork (scripts/build.sh)"
  bash scripts/build.sh
fi
source build/env.sh
source scripts/python_env.sh
"$PYTHON" -m pip install -q --disable-pip-version-check --root-user-action=ignore \
  -r python/npair_examples/requirements.txt
export PYTHONPATH="$root/python${PYTHONPATH:+:$PYTHONPATH}"
export GLOG_logtostderr=1   # caffe logs to the (tee'd) files only
py() { "$PYTHON" -m "npair_examples.$1" "${@:2}"; }
gpu=(); [[ -n ${NPAIR_GPU:-} ]] && gpu=(-gpu "$NPAIR_GPU")

models=(npair npair_xbm softmax contrastive)
if [[ -n $compare ]]; then
  models+=(npair_rand npair_scaled npair_python)
  for m in npair npair_xbm softmax contrastive npair_rand npair_scaled npair_python; do
    models+=("${m}_seed2")
  done
fi

step "1/6 data: CJK characters from Debian's font faces -> $run/data"
py glyphs --out "$run/data"
py glyph_nets --check --out models/glyphs \
  || { echo "models/glyphs is not what npair_examples.glyph_nets writes: rerun it"; exit 1; }
find "$run" -mindepth 1 -maxdepth 1 ! -name data -exec rm -rf {} +
mkdir -p "$run/solvers"

# Small nets scale poorly over threads: one thread per training, two trainings per core
# (each waits on its data layer's image decoding part of the time, which the other fills;
# with one more than the cores, the fourth default model ran alone on one core at the end).
cores=$(nproc)
jobs=${NPAIR_JOBS:-$(( ${#models[@]} < 2 * cores ? ${#models[@]} : 2 * cores ))}
threads=$(( cores / jobs > 0 ? cores / jobs : 1 ))
step "2/6 caffe train: ${models[*]} ($jobs at a time, $threads thread(s) each; logs: $run/<model>_train.log)"
train() {  # model name, e.g. npair or softmax_seed2
  local name=$1 base=${1%_seed2} seed=1
  [[ $name == *_seed2 ]] && seed=2
  local solver=$run/solvers/${name}_solver.prototxt t0
  "$PYTHON" -c "from npair_examples.glyph_nets import solver; import sys
sys.stdout.write(solver('$base', 'models/glyphs', seed=$seed, name='$name'))" > "$solver"
  t0=$(date +%s)
  if OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads caffe train --solver="$solver" \
       "${gpu[@]}" > "$run/${name}_train.log" 2>&1; then
    echo "  $name: trained in $(( $(date +%s) - t0 ))s, $(grep -o 'Iteration [0-9]*, loss = .*' "$run/${name}_train.log" | tail -1)"
  else
    echo "  $name: caffe train failed; the end of $run/${name}_train.log:"; tail -20 "$run/${name}_train.log"
    return 1
  fi
}
pids=()
for m in "${models[@]}"; do
  while (( $(jobs -rp | wc -l) >= jobs )); do wait -n || true; done
  train "$m" & pids+=($!)
done
failed=0
for p in "${pids[@]}"; do wait "$p" || failed=1; done
(( failed == 0 )) || { echo "run_example: a training failed (above)"; exit 1; }

step "3/6 evaluate on the unseen characters (and the untrained net, raw pixels)"
final=()
for m in "${models[@]}"; do final+=(--model "$m=$run/${m}_iter_2000.caffemodel"); done
py evaluate --deploy models/glyphs/deploy.prototxt --blob embed_norm \
  --list unseen="$run/data/unseen.txt" --root-folder "$run/data/" --pixels \
  "${final[@]}" --model untrained= \
  --out "$run/metrics.json" --embeddings "$run/embeddings.npz"

step "4/6 convergence: unseen R@1 and MAP@R at every snapshot"
prefixes=()
for m in "${models[@]}"; do prefixes+=(--model "$m=$run/$m"); done
py convergence --deploy models/glyphs/deploy.prototxt --blob embed_norm \
  --list "$run/data/unseen.txt" --root-folder "$run/data/" "${prefixes[@]}" \
  --out "$run/convergence.json" --plot "$run/convergence.png"

step "5/6 pictures"
py plot_log "$run/npair_train.log" --out "$run/training.png" \
  --title "N-pair (usage mining), 64 characters x 2: training batches (lines), unseen batches (dots)"
py plot_embedding "$run/embeddings.npz" --split unseen --metrics "$run/metrics.json" \
  --classes 20 --models npair_xbm,npair,softmax,contrastive,untrained --out "$run/tsne.png"
py plot_retrieval "$run/embeddings.npz" --list "$run/data/unseen.txt" --root-folder "$run/data/" \
  --models npair_xbm,npair,softmax --out "$run/retrieval.png"

step "6/6 done in $(( $(date +%s) - start ))s. In $run/:"
echo "  metrics.json, embeddings.npz   the unseen characters' figures and embeddings, per model"
echo "  convergence.png                unseen R@1 and MAP@R against iteration, every model"
echo "  training.png                   N-pair loss and in-batch R@1, training and unseen batches"
echo "  tsne.png                       t-SNE of 20 unseen characters, per model"
echo "  retrieval.png                  10 unseen queries and their 8 nearest: N-pair with and without the memory, softmax"
echo "  <model>_train.log, <model>_iter_*.caffemodel, solvers/, data/"
