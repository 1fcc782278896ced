#!/usr/bin/env bash
# Packs a CUDA build for a GPU machine that has the CUDA toolkit and driver but none
# of Caffe's libraries (nor a compiler to build them): the caffe tool, the
# gtest binary, libcaffe and every shared library they load that is neither glibc's
# nor CUDA's, into DEST/bundle.tar.xz (git-ignored .device/ by default).
#   bash scripts/gpu_bundle.sh [BUILD_DIR] [DEST]     (default: build-cuda-dev .device)
# libstdc++ and libgcc_s go to compat/, used there only if the machine's own are older.
# A build with USE_OPENCV/USE_LEVELDB/USE_LMDB=OFF keeps the bundle small (OpenCV's
# image codecs pull in GDAL and more).
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${1:-build-cuda-dev}"
dest="${2:-.device}"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib" "$stage/compat" "$dest"

cp "$build_dir/caffe/tools/caffe" "$build_dir/caffe/test/test.testbin" "$stage/bin/"
cp -L "$build_dir/caffe/lib/libcaffe.so" "$stage/lib/$(objdump -p "$build_dir/caffe/lib/libcaffe.so" | awk '/SONAME/{print $2}')"

# name => path for everything the two programs load, resolved here.
ldd "$stage/bin/caffe" "$stage/bin/test.testbin" "$build_dir/caffe/lib/libcaffe.so" |
  awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | sort -u |
  while read -r name path; do
    case "$name" in
      libc.so.*|libm.so.*|libdl.so.*|libpthread.so.*|librt.so.*|ld-linux*|libresolv.so.*) ;;
      libcuda.so.*|libcudart.so.*|libcublas*.so.*|libcurand.so.*|libcudnn*|libnvidia*) ;;
      libcaffe.so.*) ;;
      libstdc++.so.*|libgcc_s.so.*) cp -L "$path" "$stage/compat/$name" ;;
      *) cp -L "$path" "$stage/lib/$name" ;;
    esac
  done
strip --strip-unneeded "$stage/bin/"* "$stage/lib/"* 2>/dev/null || true
tar -cJf "$dest/bundle.tar.xz" -C "$stage" bin lib compat
echo "gpu_bundle: $(ls "$stage/lib" | wc -l) libraries, $(du -sh "$stage" | cut -f1) unpacked," \
     "$(du -h "$dest/bundle.tar.xz" | cut -f1) in $dest/bundle.tar.xz"
