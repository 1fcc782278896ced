#ifndef CAFFE_UTIL_NPAIR_ROW_KERNELS_HPP_
#define CAFFE_UTIL_NPAIR_ROW_KERNELS_HPP_

/**
 * @file
 * The passes over one query's row of similarities that the N-pair loss's CPU
 * path makes (npair_row_passes.inc), compiled for each vector width the
 * build can target, and the choice of the widest that the CPU running it
 * has: AVX-512 (64-byte registers), AVX2 (32), else the baseline (16: SSE2
 * on x86-64, NEON on ARM). Every width gives the same bits.
 * Private to the N-pair CPU code: not part of Caffe's installed headers.
 */

#include <vector>

#include "caffe/util/npair_miner.hpp"

namespace caffe {
namespace npair_cpu {

/// One query's row: its similarities to the C candidates and their labels.
template <typename Dtype>
struct NPairRow {
  const Dtype* s;       ///< C similarities
  const Dtype* labels;  ///< C candidate labels
  int count;            ///< C
  int self;             ///< the query's own column, no pair
  Dtype label;          ///< the query's label
};

/// One instruction set's row passes.
template <typename Dtype>
struct NPairRowKernels {
  const char* isa;  ///< "avx512", "avx2" or "baseline"
  /// The largest s_j over the row's negatives (y_j != label, j != self);
  /// -inf when there is none. A NaN never wins.
  Dtype (*max_negative)(const NPairRow<Dtype>& row);
  /**
   * The row's loss l_i is returned and its pair weights G_i. / (g / N) are
   * written into w (C values), by the recipe of npair_loss_recipe.hpp over
   * the pairs that `kept` keeps; when recall_bound is given, *ahead becomes
   * the number of negatives with s_j >= *recall_bound (for Recall@K).
   */
  double (*loss_row)(const NPairRow<Dtype>& row,
      const NPairKeptBounds<Dtype>& kept, const Dtype* recall_bound,
      Dtype* w, int* ahead);
};

/// The kernels of the widest instruction set this CPU runs.
template <typename Dtype>
const NPairRowKernels<Dtype>& NPairRowKernelsForCpu();

/// Every instruction set's kernels that this CPU runs, the widest first (for
/// the tests that hold them to the same bits).
template <typename Dtype>
std::vector<const NPairRowKernels<Dtype>*> NPairRowKernelsAvailable();

}  // namespace npair_cpu
}  // namespace caffe

#endif  // CAFFE_UTIL_NPAIR_ROW_KERNELS_HPP_
