#!/usr/bin/env bash
# Installs what building the fork and running its tests need: Debian's build
# dependencies of Caffe (bookworm's libraries) and pycaffe's Python packages.
# Cheap when everything is already there: apt is asked only for what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(
  build-essential cmake ccache patch dpkg-dev
  protobuf-compiler libprotobuf-dev libprotoc-dev
  libgoogle-glog-dev libgflags-dev libhdf5-dev libleveldb-dev liblmdb-dev libsnappy-dev
  libopencv-dev libopenblas-dev
  libboost-dev libboost-filesystem-dev libboost-system-dev libboost-thread-dev libboost-python-dev
  python3-dev python3-venv
  graphviz  # pydot in Caffe's test_draw calls `dot`
)
# The font faces the glyphs example renders (its table's package column).
mapfile -t font_packages < <(grep -v '^#' python/npair_examples/data/glyph_faces.tsv | cut -f4 | sort -u)
apt_packages+=("${font_packages[@]}")
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""; ((EUID == 0)) || sudo="sudo"
  echo "install_deps: apt-get install ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

source scripts/python_env.sh
"$PYTHON" -m pip install -q --disable-pip-version-check --root-user-action=ignore -r python/requirements.txt
