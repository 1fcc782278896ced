#ifndef CAFFE_UTIL_NPAIR_SELECTION_HPP_
#define CAFFE_UTIL_NPAIR_SELECTION_HPP_

/**
 * @file
 * The pair-selection rules of NPairMultiClassLossLayer (spec sections 1 and 3),
 * kept in one place so that the CPU and CUDA paths cannot drift apart:
 *
 *  - NPairRelativePosition: which entry of an ascending similarity list a
 *    RELATIVE_* method takes as its threshold;
 *  - NPairKeepPositive / NPairKeepNegative: whether a pair survives mining,
 *    given its similarity, its row's threshold and the margin;
 *  - CheckNPairLossParameter: the set-up time validation of the parameters.
 *
 * Where the thresholds come from (spec section 3):
 *  - HARD, EASY, RAND: an extreme of the *other* kind of pair. The positives'
 *    threshold is the largest negative similarity, the negatives' threshold
 *    the smallest positive similarity; -inf / +inf when there is none.
 *  - RELATIVE_*: an order statistic of the *same* kind of pair, the entry
 *    NPairRelativePosition(n, sn) of its ascending list of length n.
 * LOCAL takes those over the query's own row, GLOBAL over every ordered pair
 * (i, j), i != j, of the batch.
 *
 * The per-element functions are plain inline code callable from CUDA kernels.
 * All comparisons are made in double: similarity and threshold as the Dtype
 * values they are, the margin as the float the proto holds.
 */

#include <math.h>

#include <cmath>
#include <string>

#include "glog/logging.h"

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
  double pos = (s >= 0) ? last - floor(s) : trunc(last + s * n);
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

/**
 * @brief Fails, naming the layer, unless every margin and sn is finite.
 *
 * All four are checked whatever the methods: a NaN left in an unused field
 * today becomes a silent NaN loss when someone switches the method tomorrow.
 */
inline void CheckNPairLossParameter(const NPairLossParameter& param,
    const std::string& layer_type) {
  CHECK(std::isfinite(param.margin_ident())) << layer_type
      << " Layer: npair_loss_param.margin_ident must be finite, got "
      << param.margin_ident();
  CHECK(std::isfinite(param.margin_diff())) << layer_type
      << " Layer: npair_loss_param.margin_diff must be finite, got "
      << param.margin_diff();
  CHECK(std::isfinite(param.identsn())) << layer_type
      << " Layer: npair_loss_param.identsn must be finite, got "
      << param.identsn();
  CHECK(std::isfinite(param.diffsn())) << layer_type
      << " Layer: npair_loss_param.diffsn must be finite, got "
      << param.diffsn();
}

}  // namespace caffe

#endif  // CAFFE_UTIL_NPAIR_SELECTION_HPP_
