#!/usr/bin/env bash
# Every test: builds the fork (scripts/build.sh), then runs our gtests (C++ layers),
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
build/caffe/test/test.testbin
bash scripts/check_cuda_compile.sh

# NPAIR_REQUIRE_PYCAFFE=1: a missing or broken pycaffe (or `caffe`) fails the run
# instead of skipping every test that needs it (tests/conftest.py).
NPAIR_REQUIRE_PYCAFFE=1 "$PYTHON" -m pytest -q tests build/caffe-src/python/caffe/test
