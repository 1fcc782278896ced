#!/usr/bin/env bash
# On a GPU machine, from the repository root, with the bundle of scripts/gpu_bundle.sh
# in .device/: runs our gtests (CPU and GPU typed tests, CPU-GPU agreement), two of
# them under compute-sanitizer, `caffe time -gpu 0` on benchmarks/gpu/*.prototxt, the
# CuPy fallback's tests and its timing. Logs go to $OUT (default /tmp/npair-out); a
# summary is printed last.
#   bash scripts/gpu_device_run.sh [all|gtest|sanitize|time|cupy]...   (default: all)
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/npair-out}"
mkdir -p "$out"
root=/tmp/npair-bundle
steps=("${@:-all}")
want() { [[ " ${steps[*]} " == *" all "* || " ${steps[*]} " == *" $1 "* ]]; }

rm -rf "$root" && mkdir -p "$root" && tar -xJf .device/bundle.tar.xz -C "$root" || exit 1
# CUDA's libraries from the machine: the toolkit's, else the Python wheels'.
cuda_dirs=""
for lib in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10; do
  dir=$(find /usr/local/cuda/lib64/ /usr/local/cuda*/targets/*/lib/ /usr/lib/x86_64-linux-gnu/ \
          /opt /usr/local/lib -name "$lib" -printf '%h\n' 2>/dev/null | head -1)
  [[ -n "$dir" && ":$cuda_dirs:" != *":$dir:"* ]] && cuda_dirs="$cuda_dirs:$dir"
done
export LD_LIBRARY_PATH="$root/lib$cuda_dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if ! "$root/bin/caffe" --version >/dev/null 2>&1 &&
   "$root/bin/caffe" --version 2>&1 | grep -q GLIBCXX; then
  export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$root/compat"
fi
if ldd "$root/bin/test.testbin" | grep "not found"; then
  echo "gpu_device_run: libraries missing (above)"; exit 1
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee /tmp/npair-gpu.txt
summary=()

if want gtest; then
  timeout 240 "$root/bin/test.testbin" > "$out/gtest.log" 2>&1
  rc=$?
  summary+=("gtest (all ours, CPU+GPU): rc=$rc; $(grep -E '^\[  (PASSED|FAILED)  \]' "$out/gtest.log" | tr '\n' ' ')")
  grep -E '^\[  FAILED  \]' "$out/gtest.log" | head -20
fi

if want time; then
  for n in 1024 4096; do
    timeout 90 "$root/bin/caffe" time -model "benchmarks/gpu/npair_vs_ip_n$n.prototxt" \
      -gpu 0 -iterations 50 > "$out/time_n$n.log" 2>&1
    summary+=("caffe time N=$n D=512: rc=$?")
    while read -r line; do summary+=("  $line"); done < <(
      grep -E '(npair_usage|npair_rand|ip)\s+(forward|backward):' "$out/time_n$n.log" |
      sed -E 's/.*\] +//')
  done
fi

if want cupy; then
  PYTHONPATH=python timeout 150 python3 -m pytest -q -rs -p no:cacheprovider \
    tests/test_cupy_fallback.py > "$out/pytest_cupy.log" 2>&1
  summary+=("pytest tests/test_cupy_fallback.py: rc=$? $(tail -1 "$out/pytest_cupy.log")")
  PYTHONPATH=python timeout 100 python3 benchmarks/gpu/cupy_fallback_bench.py \
    > "$out/cupy_bench.log" 2>&1
  summary+=("cupy bench: rc=$?")
  while read -r line; do summary+=("  $line"); done < "$out/cupy_bench.log"
fi

if want sanitize; then
  for tool in memcheck racecheck; do
    filter='NPairGpuAgreementTest/*.TestEdgeBatches:L2NormalizeGpuAgreementTest/0.*'
    [[ $tool == memcheck ]] && filter="$filter:NPairGpuAgreementTest/0.TestAllMiningsSmallBatch"
    timeout 100 compute-sanitizer --tool "$tool" --error-exitcode 9 \
      "$root/bin/test.testbin" --gtest_filter="$filter" \
      > "$out/sanitize_$tool.log" 2>&1
    summary+=("compute-sanitizer $tool: rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$out/sanitize_$tool.log" | head -1)")
  done
fi

{ echo "==== summary ($(cat /tmp/npair-gpu.txt))"; printf '%s\n' "${summary[@]}"; } |
  tee "$out/summary.txt"
