#ifndef CAFFE_UTIL_NPAIR_GPU_PASSES_HPP_
#define CAFFE_UTIL_NPAIR_GPU_PASSES_HPP_

/**
 * @file
 * The passes of NPairMultiClassLossLayer's Forward_gpu and Backward_gpu, the
 * CUDA twins of npair_cpu_passes.hpp, with the same rules from
 * caffe/util/npair_selection.hpp. Each is a host function that launches its
 * kernels on the default stream and returns without waiting for them or
 * reading anything back, so a Forward made of them does not stop the host;
 * every pointer is to device memory, every N x N matrix row-major. Defined
 * by job:
 *  - npair_gpu_symmetric.cu: S = X X^T and G + G^T, the two symmetric
 *    N x N matrices;
 *  - npair_gpu_radix_select.cu: the RELATIVE_* thresholds;
 *  - npair_gpu_rows.cu: one block per query for the HARD / EASY thresholds
 *    and Recall@K counts, and for the loss and pair weights; the rows' L1
 *    norms; the scalar tops.
 * Private to the layer's CUDA code and its tests: not part of Caffe's
 * installed headers.
 */

#include "caffe/util/npair_radix_select.hpp"
#include "caffe/util/npair_selection.hpp"

namespace caffe {
namespace npair_gpu {

/// sim = X X^T (X: num x dim), exactly symmetric: S_ij and S_ji are one
/// value, as the GLOBAL lists need.
template <typename Dtype>
void Similarity(const int num, const int dim, const Dtype* x, Dtype* sim);

/// sum = w + w^T (Backward's G + G^T, up to the factor g / N).
template <typename Dtype>
void AddTranspose(const int num, const Dtype* w, Dtype* sum);

/**
 * @brief The absolute thresholds of every row and the Recall@K counts, in
 *        one pass over S.
 *
 * Where asked: pos_threshold[i] = the most similar negative of query i
 * (-inf if none), neg_threshold[i] = its least similar positive (+inf if
 * none), ahead[i] = the number of negatives at least as similar as its best
 * positive (-1: not eligible, NPairRecallEligible).
 */
template <typename Dtype>
void RowExtremes(const int num, const Dtype* sim, const Dtype* labels,
    const bool want_pos_threshold, const bool want_neg_threshold,
    const bool want_recall, Dtype* pos_threshold, Dtype* neg_threshold,
    int* ahead);

/// GLOBAL HARD / EASY: every threshold[i] becomes the max (or min) of all.
template <typename Dtype>
void BatchExtreme(const int num, const bool take_max, Dtype* threshold);

/**
 * @brief The RELATIVE_* threshold, by radix select, of the positives
 *        (same_label) or the negatives of every query: from its own row
 *        (LOCAL), or from every pair of the batch (global).
 *
 * threshold[i] = entry NPairRelativePosition(n, sn) of the ascending list of
 * n similarities, empty_value where the list is empty. state: where a
 * global select keeps its passes (unused by a LOCAL one).
 */
template <typename Dtype>
void RelativeThresholds(const int num, const Dtype* sim, const Dtype* labels,
    const bool same_label, const bool global, const float sn,
    const Dtype empty_value, NPairRadixState* state, Dtype* threshold);

/// Row by row, as LossAndPairWeights_cpu: row_loss[i] = l_i and row i of
/// weight = G_i. / (g / N), mined by the thresholds and margins.
template <typename Dtype>
void LossAndPairWeights(const int num, const Dtype* sim, const Dtype* labels,
    const Dtype* pos_threshold, const Dtype* neg_threshold,
    const NPairMiningMethod ap_method, const NPairMiningMethod an_method,
    const float margin_ident, const float margin_diff, Dtype* weight,
    double* row_loss);

/// row_asum[i] = sum_d |x_id|, in double (X: num x dim).
template <typename Dtype>
void RowAbsSums(const int num, const int dim, const Dtype* x,
    double* row_asum);

/// The scalar tops WriteTops fills; NULL where the layer has no such top.
template <typename Dtype>
struct ScalarTops {
  Dtype* loss;
  Dtype* recall[3];  ///< R@1, R@5, R@10
  Dtype* feature_asum;
};

/// The tops from the per-row values, each summed over the rows in double
/// in an order that depends on N alone: the loss (the mean of row_loss),
/// R@K (from ahead) and feature_asum (the mean of row_asum), each where
/// tops has it.
template <typename Dtype>
void WriteTops(const int num, const double* row_loss, const int* ahead,
    const double* row_asum, const ScalarTops<Dtype>& tops);

}  // namespace npair_gpu
}  // namespace caffe

#endif  // CAFFE_UTIL_NPAIR_GPU_PASSES_HPP_
