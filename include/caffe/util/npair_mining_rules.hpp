#ifndef CAFFE_UTIL_NPAIR_MINING_RULES_HPP_
#define CAFFE_UTIL_NPAIR_MINING_RULES_HPP_

/**
 * @file
 * The pair-mining rules of the N-pair loss (docs/layer_contract.md §3), as
 * plain inline code that the CPU passes, the CUDA kernels and the host all
 * call, so that no path can drift from another:
 *
 *  - NPairRelativePosition: which entry of an ascending similarity list a
 *    RELATIVE_* method takes as its threshold;
 *  - NPairKeepPositive / NPairKeepNegative: whether a pair survives mining,
 *    given its similarity, its query's threshold and the margin.
 *
 * Where the thresholds come from is caffe/util/npair_miner.hpp's job:
 *  - HARD, EASY: an extreme of the *other* kind of pair. The positives'
 *    threshold is the largest negative similarity, the negatives' threshold
 *    the smallest positive similarity; -inf / +inf when there is none.
 *  - RELATIVE_*: an order statistic of the *same* kind of pair, the entry
 *    NPairRelativePosition(n, sn) of its ascending list of length n.
 *  - RAND: none; every pair is kept.
 * LOCAL takes those over the query's own candidates, GLOBAL over every
 * query-candidate pair of the batch.
 *
 * All comparisons are made in double: similarity and threshold as the Dtype
 * values they are, the margin as the float the proto holds.
 */

#include <math.h>

#include "caffe/proto/caffe.pb.h"

#ifdef __CUDACC__
#define NPAIR_HOST_DEVICE __host__ __device__
#else
#define NPAIR_HOST_DEVICE
#endif

namespace caffe {

typedef NPairLossParameter_MiningMethod NPairMiningMethod;

/// RELATIVE_* methods take their threshold from a rank, the others from an
/// extreme value.
NPAIR_HOST_DEVICE inline bool NPairIsRelative(const NPairMiningMethod method) {
  return method == NPairLossParameter_MiningMethod_RELATIVE_HARD ||
      method == NPairLossParameter_MiningMethod_RELATIVE_EASY;
}

/**
 * @brief The index, in an ascending list of n >= 1 similarities, of the
 *        threshold of a RELATIVE_* method with parameter sn (identsn/diffsn).
 *
 * n - 1 - floor(sn) for sn >= 0 (-0.0 included: it compares equal to 0), else
 * trunc(n - 1 + sn * n); computed in double and clamped to [0, n - 1] before
 * the conversion to int, so any finite sn gives a valid index.
 */
NPAIR_HOST_DEVICE inline int NPairRelativePosition(const int n,
    const float sn) {
  const double last = n - 1;
  const double s = sn;
#ifdef __CUDA_ARCH__
  // nvcc contracts last + s * n into one fused multiply-add, which rounds
  // once; the host code (x86-64 without FMA, and Python's float64) rounds
  // the product, then the sum. The intrinsics round each on the device too,
  // so both give the same position for every n and sn.
  double pos = (s >= 0) ? last - floor(s)
                        : trunc(__dadd_rn(last, __dmul_rn(s, n)));
#else
  double pos = (s >= 0) ? last - floor(s) : trunc(last + s * n);
#endif
  if (pos < 0) { pos = 0; }
  if (pos > last) { pos = last; }
  return static_cast<int>(pos);
}

/// Whether a positive pair of similarity s is mined, given its threshold t
/// and the margin m (margin_ident).
NPAIR_HOST_DEVICE inline bool NPairKeepPositive(const NPairMiningMethod method,
    const double s, const double t, const double m) {
  switch (method) {
  case NPairLossParameter_MiningMethod_HARD:          return s < t + m;
  case NPairLossParameter_MiningMethod_EASY:          return s >= t + m;
  case NPairLossParameter_MiningMethod_RELATIVE_HARD: return s <= t + m;
  case NPairLossParameter_MiningMethod_RELATIVE_EASY: return s >= t + m;
  default:                                            return true;  // RAND
  }
}

/// Whether a negative pair of similarity s is mined, given its threshold t
/// and the margin m (margin_diff).
NPAIR_HOST_DEVICE inline bool NPairKeepNegative(const NPairMiningMethod method,
    const double s, const double t, const double m) {
  switch (method) {
  case NPairLossParameter_MiningMethod_HARD:          return s > t + m;
  case NPairLossParameter_MiningMethod_EASY:          return s <= t + m;
  case NPairLossParameter_MiningMethod_RELATIVE_HARD: return s >= t + m;
  case NPairLossParameter_MiningMethod_RELATIVE_EASY: return s <= t + m;
  default:                                            return true;  // RAND
  }
}

}  // namespace caffe

#endif  // CAFFE_UTIL_NPAIR_MINING_RULES_HPP_
