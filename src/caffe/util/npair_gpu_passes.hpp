#ifndef CAFFE_UTIL_NPAIR_GPU_PASSES_HPP_
#define CAFFE_UTIL_NPAIR_GPU_PASSES_HPP_

/**
 * @file
 * The device passes of the N-pair loss's CUDA path: the twins of the CPU
 * path's matrix steps (npair_cpu_matrix.hpp), mining (npair_miner.cpp) and
 * row passes (npair_row_kernels.hpp), with the same rules
 * (npair_mining_rules.hpp) and recipe (npair_loss_recipe.hpp). Each is a
 * host function that launches its kernels on the default stream and returns
 * without waiting for them or reading anything back, so a Forward made of
 * them does not stop the host; every pointer is to device memory, every
 * matrix row-major, an N x C one with rows ld apart. Defined by job:
 *  - npair_gpu_matrix.cu: S = [X X^T | X R^T], G_B + G_B^T, and the
 *    products of the gradients;
 *  - npair_gpu_radix_select.cu: the RELATIVE_* thresholds;
 *  - npair_gpu_rows.cu: one block per query for the HARD / EASY thresholds
 *    and for the loss, the pair weights and the Recall@K counts; the rows'
 *    L1 norms; the scalar tops.
 * Private to the N-pair CUDA code and its tests: not part of Caffe's
 * installed headers.
 */

#include "caffe/common.hpp"
#include "caffe/util/mkl_alternate.hpp"
#include "caffe/util/npair_miner.hpp"
#include "caffe/util/npair_radix_select.hpp"

namespace caffe {
namespace npair_gpu {

/// sim = [X X^T | X R^T] (X: num x dim, R: refs x dim; sim: num x (num +
/// refs), rows ld apart), its first num columns exactly symmetric: S_ij and
/// S_ji are one value, as the GLOBAL lists need.
template <typename Dtype>
void Similarity(const int num, const int refs, const int dim, const Dtype* x,
    const Dtype* r, const int ld, Dtype* sim);

/// h = g + g^T over the n x n corners of g and h (rows ld apart).
template <typename Dtype>
void AddTranspose(const int n, const int ld, const Dtype* g, Dtype* h);

/// c = alpha op(a) op(b) + beta c, row-major, with a, b and c rows lda, ldb
/// and ldc apart (op(a): m x k, op(b): k x n), on Caffe's cuBLAS handle.
template <typename Dtype>
void Gemm(const CBLAS_TRANSPOSE trans_a, const CBLAS_TRANSPOSE trans_b,
    const int m, const int n, const int k, const Dtype alpha, const Dtype* a,
    const int lda, const Dtype* b, const int ldb, const Dtype beta, Dtype* c,
    const int ldc);

/**
 * @brief The HARD / EASY thresholds of every query, in one pass over its
 *        candidates: pos_threshold[i] = its most similar negative (-inf if
 *        none), neg_threshold[i] = its least similar positive (+inf if none),
 *        each where asked (non-NULL).
 */
template <typename Dtype>
void RowExtremes(const NPairSimilarities<Dtype>& sim, Dtype* pos_threshold,
    Dtype* neg_threshold);

/// GLOBAL HARD / EASY: every threshold[i] becomes the max (or min) of all.
template <typename Dtype>
void BatchExtreme(const int num, const bool take_max, Dtype* threshold);

/**
 * @brief The RELATIVE_* threshold, by radix select, of the positives
 *        (same_label) or the negatives of every query: from its own
 *        candidates (LOCAL), or from every (query, candidate) pair (global).
 *
 * threshold[i] = entry NPairRelativePosition(n, sn) of the ascending list of
 * n similarities, empty_value where the list is empty. state: where a
 * global select keeps its passes (unused by a LOCAL one).
 */
template <typename Dtype>
void RelativeThresholds(const NPairSimilarities<Dtype>& sim,
    const bool same_label, const bool global, const float sn,
    const Dtype empty_value, NPairRadixState* state, Dtype* threshold);

/// What LossAndPairWeights mines by: the methods and margins, and each
/// query's thresholds (NULL for a RAND side).
template <typename Dtype>
struct RowMining {
  NPairMiningMethod ap_method, an_method;
  float margin_ident, margin_diff;
  const Dtype* pos_threshold;
  const Dtype* neg_threshold;
};

/**
 * @brief Row by row, as the CPU's loss pass: row_loss[i] = l_i and row i of
 *        weight (rows sim.ld apart) = G_i. / (g / N); and, if ahead is not
 *        NULL, ahead[i] = the number of negatives at least as similar as
 *        query i's best positive, -1 for a query without a positive.
 */
template <typename Dtype>
void LossAndPairWeights(const NPairSimilarities<Dtype>& sim,
    const RowMining<Dtype>& mining, Dtype* weight, double* row_loss,
    int* ahead);

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
