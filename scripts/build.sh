#!/usr/bin/env bash
# Builds the fork: installs dependencies, fetches Caffe's source (or uses
# CAFFE_SOURCE_DIR), overlays our files and builds into build/. Re-running it
# rebuilds only what changed. Afterwards: `source build/env.sh`.
#   CAFFE_SOURCE_DIR=/path/to/caffe   build a Caffe checkout of your own
#   CAFFE_NPAIR_CUDA=ON               build with CUDA (default: CPU only)
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install_deps.sh
source scripts/python_env.sh
cmake -S . -B build -Wno-dev -Wno-deprecated -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE="$PYTHON" \
  -DCAFFE_NPAIR_CUDA="${CAFFE_NPAIR_CUDA:-OFF}" ${CAFFE_SOURCE_DIR:+-DCAFFE_SOURCE_DIR="$CAFFE_SOURCE_DIR"}
cmake --build build -j"$(nproc)"
echo "build: done. Now: source build/env.sh"
