#!/usr/bin/env bash
# Every test: builds the fork (scripts/build.sh), then runs our gtests (C++ layers),
# compiles our CUDA code with nvcc where the toolkit is installed (no GPU needed),
# and runs our pytest suite (pycaffe, the Python fallback, the example's tools)
# with Caffe's own pycaffe tests, so that a broken fork is caught too.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/build.sh
source build/env.sh
source scripts/python_env.sh
"$PYTHON" -m pip install -q --disable-pip-version-check --root-user-action=ignore -r tests/requirements.txt

cmake --build build --target test.testbin -j"$(nproc)"
build/caffe/test/test.testbin
bash scripts/check_cuda_compile.sh

"$PYTHON" -m pytest -q tests build/caffe-src/python/caffe/test
