// The row passes of NPairMultiClassLossLayer's CUDA path
// (npair_gpu_passes.hpp), one block per query, with the rules of
// caffe/util/npair_selection.hpp: the HARD / EASY thresholds with the
// Recall@K counts, and the loss with the pair weights, as Thresholds_cpu,
// RecallAtK_cpu and LossAndPairWeights_cpu do on the CPU; then the rows' L1
// norms, and one block that writes the scalar tops. j == i is never a pair:
// a NaN label equals no label, its own included.

#include <math.h>

#include "caffe/common.hpp"
#include "caffe/util/npair_block_reduce.cuh"
#include "caffe/util/npair_gpu_passes.hpp"

namespace caffe {
namespace npair_gpu {

namespace {

template <typename Dtype>
__global__ void RowExtremesKernel(const int num, const Dtype* sim,
    const Dtype* labels, const bool want_pos_threshold,
    const bool want_neg_threshold, const bool want_recall,
    Dtype* pos_threshold, Dtype* neg_threshold, int* ahead) {
  const int i = blockIdx.x;
  const Dtype* s = sim + static_cast<size_t>(i) * num;
  const Dtype label = labels[i];
  const Dtype inf = HUGE_VAL;
  Dtype neg_max = -inf, pos_min = inf, pos_max = -inf;
  int num_pos = 0;
  for (int j = threadIdx.x; j < num; j += kBlockThreads) {
    if (j == i) { continue; }
    if (labels[j] == label) {
      pos_min = min(pos_min, s[j]);
      pos_max = max(pos_max, s[j]);
      ++num_pos;
    } else {
      neg_max = max(neg_max, s[j]);
    }
  }
  neg_max = BlockAllReduce(neg_max, MaxOp());
  pos_min = BlockAllReduce(pos_min, MinOp());
  if (threadIdx.x == 0) {
    if (want_pos_threshold) { pos_threshold[i] = neg_max; }
    if (want_neg_threshold) { neg_threshold[i] = pos_min; }
  }
  if (!want_recall) { return; }
  num_pos = BlockAllReduce(num_pos, SumOp());
  pos_max = BlockAllReduce(pos_max, MaxOp());
  int count = 0;
  for (int j = threadIdx.x; j < num; j += kBlockThreads) {
    // A negative tied with the best positive ranks ahead of it.
    if (j != i && labels[j] != label && s[j] >= pos_max) { ++count; }
  }
  count = BlockAllReduce(count, SumOp());
  if (threadIdx.x == 0) {
    ahead[i] = NPairRecallEligible(num_pos) ? count : -1;
  }
}

template <typename Dtype>
__global__ void BatchExtremeKernel(const int num, const bool take_max,
    Dtype* threshold) {
  const Dtype inf = HUGE_VAL;
  Dtype v = take_max ? -inf : inf;
  for (int i = threadIdx.x; i < num; i += kBlockThreads) {
    v = take_max ? max(v, threshold[i]) : min(v, threshold[i]);
  }
  v = take_max ? BlockAllReduce(v, MaxOp()) : BlockAllReduce(v, MinOp());
  for (int i = threadIdx.x; i < num; i += kBlockThreads) { threshold[i] = v; }
}

/// Whether mining keeps pair (i, j), j != i, of the kind `positive`.
template <typename Dtype>
__device__ inline bool Kept(const Dtype s, const bool positive,
    const NPairMiningMethod ap_method, const NPairMiningMethod an_method,
    const double pos_threshold, const double neg_threshold,
    const float margin_ident, const float margin_diff) {
  return positive ?
      NPairKeepPositive(ap_method, s, pos_threshold, margin_ident) :
      NPairKeepNegative(an_method, s, neg_threshold, margin_diff);
}

/// e^x (x <= 0) in the row's own precision, as the CPU path takes it
/// (npair_simd.hpp's ExpNonPositive): float rows in float, so the
/// exponential of a float row runs at float rate; the sums stay in double.
__device__ inline float ExpOf(const float x) { return expf(x); }
__device__ inline double ExpOf(const double x) { return exp(x); }

/// One block per query i: row_loss[i] = l_i and row i of weight = G_i. /
/// (g / N), by the one log-sum-exp recipe: each kept pair's exponential,
/// shifted by NPairExpShift, is stored in the row, summed by kind, and
/// scaled by the factors of NPairRowTermsOf. A row without a kept positive
/// is 0, a row with a non-finite S_ij (S_ii included) NaN, for every mining.
template <typename Dtype>
__global__ void RowLossAndWeightsKernel(const int num, const Dtype* sim,
    const Dtype* labels, const Dtype* pos_threshold,
    const Dtype* neg_threshold, const NPairMiningMethod ap_method,
    const NPairMiningMethod an_method, const float margin_ident,
    const float margin_diff, Dtype* weight, double* row_loss) {
  const int i = blockIdx.x;
  const Dtype* s = sim + static_cast<size_t>(i) * num;
  Dtype* w = weight + static_cast<size_t>(i) * num;
  const Dtype label = labels[i];
  const double t_pos = pos_threshold[i], t_neg = neg_threshold[i];
  // The shifts, and whether the row is finite: s - s is 0 for a finite s and
  // NaN for an infinite or NaN one, and a NaN survives the block's sum. In
  // Dtype, as the CPU's KeepRow: a maximum of Dtype values is one of them.
  const Dtype inf = HUGE_VAL;
  Dtype max_all = -inf, max_pos = -inf, non_finite = 0;
  int num_pos = 0;
  for (int j = threadIdx.x; j < num; j += kBlockThreads) {
    non_finite += s[j] - s[j];
    const bool positive = labels[j] == label;
    if (j != i && Kept(s[j], positive, ap_method, an_method, t_pos, t_neg,
                       margin_ident, margin_diff)) {
      max_all = max(max_all, s[j]);
      if (positive) {
        max_pos = max(max_pos, s[j]);
        ++num_pos;
      }
    }
  }
  non_finite = BlockAllReduce(non_finite, SumOp());
  num_pos = BlockAllReduce(num_pos, SumOp());
  max_all = BlockAllReduce(max_all, MaxOp());
  max_pos = BlockAllReduce(max_pos, MaxOp());
  const bool finite = non_finite == 0;
  const bool terms_to_sum = finite && num_pos > 0;  // the same for the block
  // One exponential per kept pair, into the row; 0 for the pairs dropped.
  double sum_neg = 0, sum_pos = 0;
  if (terms_to_sum) {
    for (int j = threadIdx.x; j < num; j += kBlockThreads) {
      const bool positive = labels[j] == label;
      Dtype e = 0;
      if (j != i && Kept(s[j], positive, ap_method, an_method, t_pos, t_neg,
                         margin_ident, margin_diff)) {
        // The shift is max_pos or max_all, a Dtype value: s - shift is the
        // CPU's ExpRow argument, rounded as there.
        e = ExpOf(s[j] - static_cast<Dtype>(
                             NPairExpShift(positive, max_all, max_pos)));
        if (positive) {
          sum_pos += e;
        } else {
          sum_neg += e;
        }
      }
      w[j] = e;
    }
    sum_neg = BlockAllReduce(sum_neg, SumOp());
    sum_pos = BlockAllReduce(sum_pos, SumOp());
  }
  const NPairRowTerms terms = NPairRowTermsOf(finite, num_pos > 0, max_all,
      max_pos, sum_neg, sum_pos);
  if (threadIdx.x == 0) { row_loss[i] = terms.loss; }
  // Each thread rescales the entries it wrote, by factors rounded to Dtype
  // as the CPU's ScaleRow rounds them; a row with nothing to sum is terms'
  // 0 or NaN throughout.
  const Dtype pos_scale = terms.pos_scale, neg_scale = terms.neg_scale;
  for (int j = threadIdx.x; j < num; j += kBlockThreads) {
    if (terms_to_sum) {
      const bool positive = j != i && labels[j] == label;
      w[j] *= positive ? pos_scale : neg_scale;
    } else {
      w[j] = neg_scale;
    }
  }
}

/// One block per row n: row_asum[n] = sum_d |x_nd|.
template <typename Dtype>
__global__ void RowAbsSumsKernel(const int dim, const Dtype* x,
    double* row_asum) {
  const Dtype* row = x + static_cast<size_t>(blockIdx.x) * dim;
  double sum = 0;
  for (int d = threadIdx.x; d < dim; d += kBlockThreads) {
    sum += fabs(static_cast<double>(row[d]));
  }
  sum = BlockAllReduce(sum, SumOp());
  if (threadIdx.x == 0) { row_asum[blockIdx.x] = sum; }
}

/// One block: the sums over the rows, then the tops.
template <typename Dtype>
__global__ void WriteTopsKernel(const int num, const double* row_loss,
    const int* ahead, const double* row_asum, const ScalarTops<Dtype> tops) {
  const int kRecallK[3] = {1, 5, 10};
  const bool want_recall = tops.recall[0] != NULL;
  double loss = 0, asum = 0;
  int eligible = 0, hits[3] = {0, 0, 0};
  for (int i = threadIdx.x; i < num; i += kBlockThreads) {
    loss += row_loss[i];
    if (tops.feature_asum) { asum += row_asum[i]; }
    if (want_recall && ahead[i] >= 0) {
      ++eligible;
      for (int k = 0; k < 3; ++k) { hits[k] += ahead[i] < kRecallK[k]; }
    }
  }
  loss = BlockAllReduce(loss, SumOp());
  asum = BlockAllReduce(asum, SumOp());
  eligible = BlockAllReduce(eligible, SumOp());
  for (int k = 0; k < 3; ++k) { hits[k] = BlockAllReduce(hits[k], SumOp()); }
  if (threadIdx.x != 0) { return; }
  tops.loss[0] = loss / num;
  for (int k = 0; k < 3; ++k) {
    if (tops.recall[k]) {
      tops.recall[k][0] = eligible ? Dtype(hits[k]) / eligible : Dtype(0);
    }
  }
  if (tops.feature_asum) { tops.feature_asum[0] = asum / num; }
}

}  // namespace

template <typename Dtype>
void RowExtremes(const int num, const Dtype* sim, const Dtype* labels,
    const bool want_pos_threshold, const bool want_neg_threshold,
    const bool want_recall, Dtype* pos_threshold, Dtype* neg_threshold,
    int* ahead) {
  // NOLINT_NEXT_LINE(whitespace/operators)
  RowExtremesKernel<Dtype><<<num, kBlockThreads>>>(num, sim, labels,
      want_pos_threshold, want_neg_threshold, want_recall, pos_threshold,
      neg_threshold, ahead);
  CUDA_POST_KERNEL_CHECK;
}

template <typename Dtype>
void BatchExtreme(const int num, const bool take_max, Dtype* threshold) {
  // NOLINT_NEXT_LINE(whitespace/operators)
  BatchExtremeKernel<Dtype><<<1, kBlockThreads>>>(num, take_max, threshold);
  CUDA_POST_KERNEL_CHECK;
}

template <typename Dtype>
void LossAndPairWeights(const int num, const Dtype* sim, const Dtype* labels,
    const Dtype* pos_threshold, const Dtype* neg_threshold,
    const NPairMiningMethod ap_method, const NPairMiningMethod an_method,
    const float margin_ident, const float margin_diff, Dtype* weight,
    double* row_loss) {
  // NOLINT_NEXT_LINE(whitespace/operators)
  RowLossAndWeightsKernel<Dtype><<<num, kBlockThreads>>>(num, sim, labels,
      pos_threshold, neg_threshold, ap_method, an_method, margin_ident,
      margin_diff, weight, row_loss);
  CUDA_POST_KERNEL_CHECK;
}

template <typename Dtype>
void RowAbsSums(const int num, const int dim, const Dtype* x,
    double* row_asum) {
  // NOLINT_NEXT_LINE(whitespace/operators)
  RowAbsSumsKernel<Dtype><<<num, kBlockThreads>>>(dim, x, row_asum);
  CUDA_POST_KERNEL_CHECK;
}

template <typename Dtype>
void WriteTops(const int num, const double* row_loss, const int* ahead,
    const double* row_asum, const ScalarTops<Dtype>& tops) {
  // NOLINT_NEXT_LINE(whitespace/operators)
  WriteTopsKernel<Dtype><<<1, kBlockThreads>>>(num, row_loss, ahead, row_asum,
      tops);
  CUDA_POST_KERNEL_CHECK;
}

#define INSTANTIATE_ROW_PASSES(Dtype) \
  template void RowExtremes(const int, const Dtype*, const Dtype*, \
      const bool, const bool, const bool, Dtype*, Dtype*, int*); \
  template void BatchExtreme(const int, const bool, Dtype*); \
  template void LossAndPairWeights(const int, const Dtype*, const Dtype*, \
      const Dtype*, const Dtype*, const NPairMiningMethod, \
      const NPairMiningMethod, const float, const float, Dtype*, double*); \
  template void RowAbsSums(const int, const int, const Dtype*, double*); \
  template void WriteTops(const int, const double*, const int*, \
      const double*, const ScalarTops<Dtype>&)

INSTANTIATE_ROW_PASSES(float);
INSTANTIATE_ROW_PASSES(double);

}  // namespace npair_gpu
}  // namespace caffe
