#!/usr/bin/env bash
# Every test: builds the fork (scripts/build.sh), then runs Caffe's own C++ test
# suite with our gtests in it (one binary, as Caffe's `runtest` target runs it),
# compiles our CUDA code with nvcc where the toolkit is installed (no GPU needed),
# and runs our pytest suite (pycaffe, the Python fallback, the example's tools)
# with Caffe's own pycaffe tests, so that a broken fork is caught too: without a
# working pycaffe the Python stage fails, it does not skip.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/build.sh
source build/env.sh
source scripts/python_env.sh
"$PYTHON" -m pip install -q --disable-pip-version-check --root-user-action=ignore -r tests/requirements.txt

cmake --build build --target test.testbin -j"$(nproc)"
# As `make runtest` runs it in a CPU-only build: from the Caffe tree (its tests open
# examples/images/ and src/caffe/test/test_data/ relative to it), in shuffled order,
# without the GPU tests. Caffe's temporary files and glog's log files go to a folder
# of our own (TMPDIR), removed afterwards.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
(cd build/caffe-src && TMPDIR="$scratch" ../caffe/test/test.testbin --gtest_shuffle \
  --gtest_filter='-*GPU*')
bash scripts/check_cuda_compile.sh

# The CuPy path of the fallback needs an NVIDIA GPU (its module fails without one): on a
# machine without a GPU it is left out, saying so; scripts/gpu_device_run.sh runs it.
cupy_tests=()
if ! compgen -G '/dev/nvidia[0-9]*' > /dev/null; then
  echo "test.sh: no NVIDIA GPU here: tests/test_cupy_fallback.py is not run"
  cupy_tests=(--ignore=tests/test_cupy_fallback.py)
fi
# NPAIR_REQUIRE_PYCAFFE=1: a missing or broken pycaffe (or `caffe`) fails the run
# instead of skipping every test that needs it (tests/conftest.py).
NPAIR_REQUIRE_PYCAFFE=1 "$PYTHON" -m pytest -q "${cupy_tests[@]}" tests \
  build/caffe-src/python/caffe/test
