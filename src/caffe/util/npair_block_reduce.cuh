#ifndef CAFFE_UTIL_NPAIR_BLOCK_REDUCE_CUH_
#define CAFFE_UTIL_NPAIR_BLOCK_REDUCE_CUH_

/**
 * @file
 * Block- and warp-wide helpers of the kernels of NPairMultiClassLoss and
 * L2Normalize: the block size of their per-row kernels, a reduction over a
 * block whose result every thread gets, and a histogram increment made once
 * per warp and bin. Device code: for the layers' .cu files only.
 */

#include "cub/block/block_reduce.cuh"

namespace caffe {
namespace npair_gpu {

/// Threads per block of every per-row (and single-block) kernel; a multiple
/// of 32, so every warp is whole.
const int kBlockThreads = 256;

struct MaxOp {
  template <typename T>
  __device__ T operator()(const T a, const T b) const { return a < b ? b : a; }
};
struct MinOp {
  template <typename T>
  __device__ T operator()(const T a, const T b) const { return b < a ? b : a; }
};
struct SumOp {
  template <typename T>
  __device__ T operator()(const T a, const T b) const { return a + b; }
};

/// Reduces v over the block (kBlockThreads threads) and returns the result
/// to every thread. Every thread of the block must call it. The order of
/// the operations depends only on the block size, so a sum repeats itself
/// bit for bit.
template <typename T, typename Op>
__device__ T BlockAllReduce(const T v, const Op op) {
  typedef cub::BlockReduce<T, kBlockThreads> Reduce;
  __shared__ typename Reduce::TempStorage temp;
  __shared__ T result;
  const T r = Reduce(temp).Reduce(v, op);
  if (threadIdx.x == 0) { result = r; }
  __syncthreads();
  const T out = result;
  __syncthreads();  // temp and result are reused by the next call
  return out;
}

/// hist[bin] += 1 for every lane of the warp (bin 256: nothing), one atomic
/// per distinct bin: similarities crowd into few bins, and per-lane atomics
/// on one shared address would serialise. All 32 lanes must call it.
__device__ inline void WarpHistogramAdd(unsigned int* hist, const int bin) {
  const unsigned int peers = __match_any_sync(0xffffffffu, bin);
  if (bin < 256 && (threadIdx.x & 31) == __ffs(peers) - 1) {
    atomicAdd(&hist[bin], static_cast<unsigned int>(__popc(peers)));
  }
}

}  // namespace npair_gpu
}  // namespace caffe

#endif  // CAFFE_UTIL_NPAIR_BLOCK_REDUCE_CUH_
