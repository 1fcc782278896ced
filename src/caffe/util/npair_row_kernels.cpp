// The row passes once per instruction set. Everything npair_simd.inc and
// npair_row_passes.inc use is included here first, outside the regions
// compiled for wider sets: no standard function is built for a set the CPU
// may lack. Each set's copy lives in a namespace of its own, with internal
// linkage, so no two copies can be mistaken for one another at link time.

#include <stdint.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "caffe/util/npair_loss_recipe.hpp"
#include "caffe/util/npair_miner.hpp"
#include "caffe/util/npair_row_kernels.hpp"

namespace caffe {
namespace npair_cpu {

namespace {

// The wrappers that the table points to, for one set: kBytes-wide packs.
#define NPAIR_ROW_KERNELS_OF_THIS_SET(NAME, BYTES)                          \
  template <typename Dtype>                                                 \
  Dtype MaxNegativeRow(const NPairRow<Dtype>& row) {                        \
    return MaxNegative<Dtype, BYTES>(row);                                  \
  }                                                                         \
  template <typename Dtype>                                                 \
  double LossOfRow(const NPairRow<Dtype>& row,                              \
      const NPairKeptBounds<Dtype>& kept, const Dtype* recall_bound,        \
      Dtype* w, int* ahead) {                                               \
    return LossRow<Dtype, BYTES>(row, kept, recall_bound, w, ahead);        \
  }                                                                         \
  template <typename Dtype>                                                 \
  const NPairRowKernels<Dtype>* Kernels() {                                 \
    static const NPairRowKernels<Dtype> kernels = {                         \
        NAME, &MaxNegativeRow<Dtype>, &LossOfRow<Dtype>};                   \
    return &kernels;                                                        \
  }

namespace baseline {
#include "caffe/util/npair_simd.inc"
#include "caffe/util/npair_row_passes.inc"
NPAIR_ROW_KERNELS_OF_THIS_SET("baseline", 16)
}  // namespace baseline

#if defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("avx2")
namespace avx2 {
#include "caffe/util/npair_simd.inc"
#include "caffe/util/npair_row_passes.inc"
NPAIR_ROW_KERNELS_OF_THIS_SET("avx2", 32)
}  // namespace avx2
#pragma GCC pop_options

// The AVX-512 subset every AVX-512 CPU but the Xeon Phi has.
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl")
namespace avx512 {
#include "caffe/util/npair_simd.inc"
#include "caffe/util/npair_row_passes.inc"
NPAIR_ROW_KERNELS_OF_THIS_SET("avx512", 64)
}  // namespace avx512
#pragma GCC pop_options
#endif  // defined(__x86_64__)

#undef NPAIR_ROW_KERNELS_OF_THIS_SET

}  // namespace

template <typename Dtype>
std::vector<const NPairRowKernels<Dtype>*> NPairRowKernelsAvailable() {
  std::vector<const NPairRowKernels<Dtype>*> kernels;
#if defined(__x86_64__)
  // libgcc's CPU check also asks the OS whether it saves the wide registers.
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
      && __builtin_cpu_supports("avx512dq")
      && __builtin_cpu_supports("avx512vl")) {
    kernels.push_back(avx512::Kernels<Dtype>());
  }
  if (__builtin_cpu_supports("avx2")) {
    kernels.push_back(avx2::Kernels<Dtype>());
  }
#endif
  kernels.push_back(baseline::Kernels<Dtype>());
  return kernels;
}

template <typename Dtype>
const NPairRowKernels<Dtype>& NPairRowKernelsForCpu() {
  static const NPairRowKernels<Dtype>* widest =
      NPairRowKernelsAvailable<Dtype>().front();
  return *widest;
}

template const NPairRowKernels<float>& NPairRowKernelsForCpu<float>();
template const NPairRowKernels<double>& NPairRowKernelsForCpu<double>();
template std::vector<const NPairRowKernels<float>*>
    NPairRowKernelsAvailable<float>();
template std::vector<const NPairRowKernels<double>*>
    NPairRowKernelsAvailable<double>();

}  // namespace npair_cpu
}  // namespace caffe
