#ifndef CAFFE_UTIL_NPAIR_SELECTION_HPP_
#define CAFFE_UTIL_NPAIR_SELECTION_HPP_

/**
 * @file
 * The pair-selection rules of NPairMultiClassLossLayer (docs/layer_contract.md
 * §1 and §3), kept in one place so that the CPU and CUDA paths cannot drift
 * apart:
 *
 *  - NPairRelativePosition: which entry of an ascending similarity list a
 *    RELATIVE_* method takes as its threshold;
 *  - NPairKeepPositive / NPairKeepNegative: whether a pair survives mining,
 *    given its similarity, its row's threshold and the margin;
 *  - NPairExpShift / NPairRowTermsOf: the one log-sum-exp recipe, from a
 *    row's kept similarities to its loss and pair weights, with the rule
 *    that a non-finite row makes the loss NaN;
 *  - NPairRecallEligible: which queries Recall@K counts;
 *  - CheckNPairLossParameter: the set-up time validation of the parameters.
 *
 * Where the thresholds come from (docs/layer_contract.md §3):
 *  - HARD, EASY, RAND: an extreme of the *other* kind of pair. The positives'
 *    threshold is the largest negative similarity, the negatives' threshold
 *    the smallest positive similarity; -inf / +inf when there is none.
 *  - RELATIVE_*: an order statistic of the *same* kind of pair, the entry
 *    NPairRelativePosition(n, sn) of its ascending list of length n.
 * LOCAL takes those over the query's own row, GLOBAL over every ordered pair
 * (i, j), i != j, of the batch.
 *
 * A pair is never a sample with itself: every positive and negative pass
 * leaves j == i out explicitly. A NaN label equals no label, its own
 * included, so its sample has no positive and is every other sample's
 * negative, and without that exclusion it would be its own negative too.
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

/**
 * @brief The shift of a kept pair's exponential in its query's row: the
 *        largest kept similarity of the log-sum-exp it enters first.
 *
 * The one log-sum-exp recipe of the layer (CPU, CUDA; npair_math.py follows
 * it in Python): each kept pair takes one exponential, a kept positive
 * f_j = e^(S_ij - max_pos), a kept negative e_j = e^(S_ij - max_all), where
 * max_pos is the largest kept positive similarity of the row and max_all the
 * largest kept similarity of the row. Every exponent is <= 0 and the largest
 * term of each sum is 1, so no sum overflows or underflows to zero, at any
 * gap between max_all and max_pos. NPairRowTermsOf turns the two sums into the
 * loss and the pair weights.
 */
NPAIR_HOST_DEVICE inline double NPairExpShift(const bool positive,
    const double max_all, const double max_pos) {
  return positive ? max_pos : max_all;
}

/// What one query contributes: its loss l_i, and the factors that turn each
/// kept pair's exponential (NPairExpShift) into its entry of G / (g / N):
/// G_ij / (g / N) = pos_scale * f_j for a kept positive, neg_scale * e_j for
/// a kept negative, 0 for a pair mining drops.
struct NPairRowTerms {
  double loss;
  double pos_scale;
  double neg_scale;
};

/**
 * @brief l_i and its pair-weight factors from a row's two sums.
 *
 * @param finite whether every S_ij of the row (S_ii included) is finite
 * @param any_kept_positive whether mining kept a positive of the row
 * @param max_all, max_pos the shifts (NPairExpShift)
 * @param sum_neg the sum of e_j over the kept negatives
 * @param sum_pos the sum of f_j over the kept positives (>= 1 when any)
 *
 * With r = e^(max_pos - max_all) (<= 1), the sum over every kept pair shifted
 * by max_all is sum_neg + r sum_pos, and
 *   l_i = (max_all - max_pos) + log(sum_neg + r sum_pos) - log(sum_pos),
 *   pos_scale = r / (sum_neg + r sum_pos) - 1 / sum_pos,
 *   neg_scale = 1 / (sum_neg + r sum_pos).
 * A row without a kept positive gives 0, 0, 0 (l_i is a constant). A row
 * with a non-finite similarity gives NaN for all three, whatever was mined:
 * a NaN or an infinity in the features always shows in the loss, and in the
 * gradient beside it, never as a finite loss over a NaN gradient.
 */
NPAIR_HOST_DEVICE inline NPairRowTerms NPairRowTermsOf(const bool finite,
    const bool any_kept_positive, const double max_all, const double max_pos,
    const double sum_neg, const double sum_pos) {
  NPairRowTerms terms;
  if (!finite) {
    terms.loss = terms.pos_scale = terms.neg_scale = NAN;
    return terms;
  }
  if (!any_kept_positive) {
    terms.loss = terms.pos_scale = terms.neg_scale = 0;
    return terms;
  }
  const double r = exp(max_pos - max_all);
  const double sum_all = sum_neg + r * sum_pos;
  terms.loss = (max_all - max_pos) + log(sum_all) - log(sum_pos);
  terms.pos_scale = r / sum_all - 1 / sum_pos;
  terms.neg_scale = 1 / sum_all;
  return terms;
}

/// Whether a query counts in Recall@K: it has a positive (j != i with its
/// label). Counted, never read off a similarity, which may be NaN or -inf.
NPAIR_HOST_DEVICE inline bool NPairRecallEligible(const int num_positives) {
  return num_positives > 0;
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
