#ifndef CAFFE_UTIL_NPAIR_LOSS_RECIPE_HPP_
#define CAFFE_UTIL_NPAIR_LOSS_RECIPE_HPP_

/**
 * @file
 * The one recipe of the N-pair loss (docs/layer_contract.md §3 and §4), from
 * a query's kept similarities to its loss and pair weights, as plain inline
 * code that the CPU passes and the CUDA kernels both call
 * (python/npair_loss/npair_math.py follows it in Python):
 *
 *  - NPairExpShift / NPairRowTermsOf: the log-sum-exp shifts and the row's
 *    loss and weight factors, with the rule that a non-finite row makes the
 *    loss NaN;
 *  - NPairRecallEligible: which queries Recall@K counts.
 */

#include <math.h>

#include "caffe/util/npair_mining_rules.hpp"

namespace caffe {

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

}  // namespace caffe

#endif  // CAFFE_UTIL_NPAIR_LOSS_RECIPE_HPP_
