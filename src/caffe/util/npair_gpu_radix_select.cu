// The RELATIVE_* thresholds of the N-pair loss's CUDA path
// (npair_gpu_passes.hpp): an order statistic of a query's or every query's
// similarities to candidates of one kind, found by radix select instead of
// a sort. Similarities map
// to unsigned keys with the same order, and one 8-bit digit is fixed per
// pass from a 256-bin histogram of the keys that match the digits fixed so
// far (4 passes for float, 8 for double); the key mapping and the digit
// choice are host-callable code in caffe/util/npair_radix_select.hpp. LOCAL
// runs the passes inside one block per row; GLOBAL merges the rows'
// histograms in global memory and picks each digit in a one-thread kernel,
// so the list of every (query, candidate) pair is never built, sorted or
// copied.

#include "caffe/common.hpp"
#include "caffe/util/math_functions.hpp"
#include "caffe/util/npair_block_reduce.cuh"
#include "caffe/util/npair_gpu_passes.hpp"

namespace caffe {
namespace npair_gpu {

namespace {

/// hist (256 bins, shared, zeroed by the caller) of digit `shift` of the
/// keys of query i's pairs of one kind whose higher digits equal prefix.
template <typename Dtype>
__device__ void RowHistogram(const NPairSimilarities<Dtype>& sim,
    const int i, const bool same_label, const int shift,
    const typename NPairRadixKey<Dtype>::Key prefix,
    const typename NPairRadixKey<Dtype>::Key mask, unsigned int* hist) {
  typedef typename NPairRadixKey<Dtype>::Key Key;
  const Dtype* s = sim.row(i);
  const Dtype label = sim.labels[i];
  // The loop bound is the same for every lane, as WarpHistogramAdd needs.
  for (int base = 0; base < sim.count; base += kBlockThreads) {
    const int c = base + threadIdx.x;
    int bin = 256;
    if (c < sim.count && c != i && (sim.labels[c] == label) == same_label) {
      const Key key = NPairRadixKey<Dtype>::Of(s[c]);
      if ((key & mask) == prefix) {
        bin = static_cast<int>((key >> shift) & 255);
      }
    }
    WarpHistogramAdd(hist, bin);
  }
}

/// LOCAL: one block per query selects its threshold from its own row;
/// empty_value (+-inf, as on the CPU) where the row has no such pair.
template <typename Dtype>
__global__ void RowRadixSelectKernel(const NPairSimilarities<Dtype> sim,
    const bool same_label, const float sn, const Dtype empty_value,
    Dtype* threshold) {
  typedef typename NPairRadixKey<Dtype>::Key Key;
  __shared__ unsigned int hist[256];
  __shared__ Key prefix, mask;
  __shared__ long long rank;  // NOLINT(runtime/int)
  __shared__ int empty;
  if (threadIdx.x == 0) {
    prefix = 0;
    mask = 0;
    empty = 0;
  }
  for (int shift = NPairRadixKey<Dtype>::kBits - 8; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < 256; b += kBlockThreads) { hist[b] = 0; }
    __syncthreads();
    RowHistogram(sim, blockIdx.x, same_label, shift, prefix, mask, hist);
    __syncthreads();
    if (threadIdx.x == 0) {
      NPairPickDigit(hist, shift, shift == NPairRadixKey<Dtype>::kBits - 8, sn,
                     &prefix, &mask, &rank, &empty);
    }
    __syncthreads();
    if (empty) { break; }
  }
  if (threadIdx.x == 0) {
    threshold[blockIdx.x] =
        empty ? empty_value : NPairRadixKey<Dtype>::Value(prefix);
  }
}

/// GLOBAL, one pass: each block adds its row's histogram to the batch's.
template <typename Dtype>
__global__ void BatchHistogramKernel(const NPairSimilarities<Dtype> sim,
    const bool same_label, const int shift, NPairRadixState* state) {
  typedef typename NPairRadixKey<Dtype>::Key Key;
  __shared__ unsigned int hist[256];
  for (int b = threadIdx.x; b < 256; b += kBlockThreads) { hist[b] = 0; }
  __syncthreads();
  if (state->empty) { return; }  // the same for the whole block
  RowHistogram(sim, blockIdx.x, same_label, shift,
               static_cast<Key>(state->prefix), static_cast<Key>(state->mask),
               hist);
  __syncthreads();
  for (int b = threadIdx.x; b < 256; b += kBlockThreads) {
    if (hist[b]) {
      atomicAdd(&state->hist[b],
                static_cast<unsigned long long>(hist[b]));  // NOLINT
    }
  }
}

/// GLOBAL, one pass: one thread fixes the digit, then clears the histogram
/// for the next pass.
__global__ void BatchPickDigitKernel(const int shift, const bool first,
    const float sn, NPairRadixState* state) {
  if (!state->empty) {
    NPairPickDigit(state->hist, shift, first, sn, &state->prefix,
                   &state->mask, &state->rank, &state->empty);
  }
  for (int b = 0; b < 256; ++b) { state->hist[b] = 0; }
}

template <typename Dtype>
__global__ void BatchBroadcastKernel(const int num,
    const NPairRadixState* state, const Dtype empty_value, Dtype* threshold) {
  typedef typename NPairRadixKey<Dtype>::Key Key;
  const Dtype v = state->empty ? empty_value :
      NPairRadixKey<Dtype>::Value(static_cast<Key>(state->prefix));
  CUDA_KERNEL_LOOP(i, num) { threshold[i] = v; }
}

}  // namespace

template <typename Dtype>
void RelativeThresholds(const NPairSimilarities<Dtype>& sim,
    const bool same_label, const bool global, const float sn,
    const Dtype empty_value, NPairRadixState* state, Dtype* threshold) {
  const int num = sim.num;
  if (!global) {
    // NOLINT_NEXT_LINE(whitespace/operators)
    RowRadixSelectKernel<Dtype><<<num, kBlockThreads>>>(sim, same_label, sn,
        empty_value, threshold);
    CUDA_POST_KERNEL_CHECK;
    return;
  }
  caffe_gpu_memset(sizeof(NPairRadixState), 0, state);
  const int top_shift = NPairRadixKey<Dtype>::kBits - 8;
  for (int shift = top_shift; shift >= 0; shift -= 8) {
    // NOLINT_NEXT_LINE(whitespace/operators)
    BatchHistogramKernel<Dtype><<<num, kBlockThreads>>>(sim, same_label,
        shift, state);
    CUDA_POST_KERNEL_CHECK;
    // NOLINT_NEXT_LINE(whitespace/operators)
    BatchPickDigitKernel<<<1, 1>>>(shift, shift == top_shift, sn, state);
    CUDA_POST_KERNEL_CHECK;
  }
  // NOLINT_NEXT_LINE(whitespace/operators)
  BatchBroadcastKernel<Dtype><<<CAFFE_GET_BLOCKS(num),
      CAFFE_CUDA_NUM_THREADS>>>(num, state, empty_value, threshold);
  CUDA_POST_KERNEL_CHECK;
}

template void RelativeThresholds(const NPairSimilarities<float>&, const bool,
    const bool, const float, const float, NPairRadixState*, float*);
template void RelativeThresholds(const NPairSimilarities<double>&,
    const bool, const bool, const float, const double, NPairRadixState*,
    double*);

}  // namespace npair_gpu
}  // namespace caffe
