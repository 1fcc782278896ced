#!/usr/bin/env bash
# CI's CUDA check, for a machine with no GPU: compiles our CUDA code with nvcc
# against the Caffe tree that a (CPU) build has overlaid, without CPU_ONLY:
#   - our src/**/*.cu, to machine code for each architecture (ptxas included);
#   - the Caffe files our CUDA 13 patches touch (common.cpp, math_functions.cu);
#   - our layers' .cpp files and our gtests as the CUDA build sees them (GPU
#     typed tests, agreement tests, NPairImageData's GPU prefetch);
#   - what USE_NCCL (on in the CUDA build) switches on: Caffe's NCCL solver
#     driver (parallel.cpp), the caffe tool's `train -gpu all`, pycaffe's NCCL,
#     against the nccl.h the CUDA build uses.
# Nothing is linked or run. The full CUDA build is CAFFE_NPAIR_CUDA=ON (README).
#
#   bash scripts/check_cuda_compile.sh [BUILD_DIR]    (default: build)
#   NVCC=/path/to/nvcc                 the compiler (default: nvcc on PATH, else
#                                      /usr/local/cuda/bin/nvcc)
#   CAFFE_NPAIR_CUDA_ARCH="80 90"      compute capabilities to compile for
#   NCCL_DIR=/path/to/nccl             where nccl.h is, if not in the toolkit,
#                                      /usr/include or /usr/local/include
# Skips, saying so, when no nvcc is found; fails when a file does not compile
# or there is no nccl.h (the CUDA build needs it unless CAFFE_NPAIR_NCCL=OFF).
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir="${1:-build}"
nvcc="${NVCC:-$(command -v nvcc || true)}"
if [[ -z "$nvcc" && -x /usr/local/cuda/bin/nvcc ]]; then nvcc=/usr/local/cuda/bin/nvcc; fi
if [[ -z "$nvcc" ]]; then
  echo "check_cuda_compile: SKIPPED: no nvcc (put the CUDA toolkit's bin/ on PATH or set NVCC)"
  exit 0
fi
flags_make="$build_dir/caffe/src/caffe/CMakeFiles/caffe.dir/flags.make"
pb_h="$build_dir/caffe/include/caffe/proto/caffe.pb.h"
if [[ ! -f "$flags_make" || ! -f "$pb_h" ]]; then
  echo "check_cuda_compile: $build_dir holds no configured Caffe build with caffe.pb.h;" \
       "run scripts/build.sh first" >&2
  exit 1
fi
caffe_src="$build_dir/caffe-src"
cuda_home="$(dirname "$(dirname "$(readlink -f "$nvcc")")")"

# The CPU build's include paths and definitions, less CPU_ONLY.
includes=$(sed -n 's/^CXX_INCLUDES = //p' "$flags_make")
defines=$(sed -n 's/^CXX_DEFINES = //p' "$flags_make" | tr ' ' '\n' |
          grep -v -e '^-DCPU_ONLY$' -e '^-Dcaffe_EXPORTS$' | tr '\n' ' ')
# shellcheck disable=SC2206
common=(-std=c++17 $defines -Iinclude $includes -I"$caffe_src/src" -I"$cuda_home/include")
gencode=()
for arch in ${CAFFE_NPAIR_CUDA_ARCH:-80 90}; do
  gencode+=(-gencode "arch=compute_$arch,code=sm_$arch")
done

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "check_cuda_compile: $("$nvcc" --version | tail -2 | head -1), sm ${CAFFE_NPAIR_CUDA_ARCH:-80 90}"
failed=0
check() {  # check LABEL COMMAND...
  local label="$1" start=$SECONDS; shift
  if "$@" > "$out/log" 2>&1; then
    echo "  ok    $label ($((SECONDS - start)) s)"
    grep -i -e "spill" -e "warning" "$out/log" | grep -v " 0 bytes spill" | sed 's/^/        /' || true
  else
    echo "  FAIL  $label"; sed 's/^/        /' "$out/log"; failed=1
  fi
}

mapfile -t our_cu < <(find src -name '*.cu' | sort)
for f in "${our_cu[@]}"; do
  check "$f" "$nvcc" "${common[@]}" "${gencode[@]}" -Xptxas -warn-spills \
    -Xcompiler -fPIC,-Wall,-Wno-sign-compare -c "$f" -o "$out/$(basename "$f").o"
done
check "caffe-src/src/caffe/util/math_functions.cu (patch 12)" "$nvcc" "${common[@]}" \
  -gencode "arch=compute_90,code=sm_90" -c "$caffe_src/src/caffe/util/math_functions.cu" \
  -o "$out/math_functions.o"
check "caffe-src/src/caffe/common.cpp (patch 10)" \
  c++ "${common[@]}" -fsyntax-only "$caffe_src/src/caffe/common.cpp"
for f in $(find src -name '*.cpp' -not -path '*/test/*' | sort) \
         $(find src -path '*/test/test_*.cpp' | sort); do
  check "$f (GPU build)" c++ "${common[@]}" -fsyntax-only "$f"
done

nccl_include=""
for dir in "$cuda_home/include" ${NCCL_DIR:+"$NCCL_DIR/include"} /usr/include /usr/local/include; do
  if [[ -f "$dir/nccl.h" ]]; then nccl_include="$dir"; break; fi
done
if [[ -z "$nccl_include" ]]; then
  echo "  FAIL  no nccl.h in $cuda_home/include${NCCL_DIR:+, $NCCL_DIR/include}," \
       "/usr/include or /usr/local/include (set NCCL_DIR)"
  failed=1
else
  nccl=(-DUSE_NCCL -isystem "$nccl_include")
  for f in src/caffe/parallel.cpp tools/caffe.cpp; do
    check "caffe-src/$f (USE_NCCL)" c++ "${common[@]}" "${nccl[@]}" -fsyntax-only "$caffe_src/$f"
  done
  pycaffe_flags="$build_dir/caffe/python/CMakeFiles/pycaffe.dir/flags.make"
  py_includes=$(sed -n 's/^CXX_INCLUDES = //p' "$pycaffe_flags")
  # shellcheck disable=SC2086
  check "caffe-src/python/caffe/_caffe.cpp (USE_NCCL)" c++ "${common[@]}" "${nccl[@]}" \
    $py_includes -fsyntax-only "$caffe_src/python/caffe/_caffe.cpp"
fi

if ((failed)); then
  echo "check_cuda_compile: FAILED" >&2
  exit 1
fi
echo "check_cuda_compile: passed"
