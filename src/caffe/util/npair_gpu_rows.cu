// The row passes of the N-pair loss's CUDA path (npair_gpu_passes.hpp), one
// block per query over its C candidates, with the rules of
// npair_mining_rules.hpp and the recipe of npair_loss_recipe.hpp: the
// HARD / EASY thresholds, as the miner's CPU sweep; the loss with the pair
// weights and the Recall@K counts, as the CPU's loss pass; then the rows' L1
// norms, and one block that writes the scalar tops. Column i of query i is
// never a pair: a NaN label equals no label, its own included.

#include <math.h>

#include "caffe/common.hpp"
#include "caffe/util/npair_block_reduce.cuh"
#include "caffe/util/npair_gpu_passes.hpp"
#include "caffe/util/npair_loss_recipe.hpp"

namespace caffe {
namespace npair_gpu {

namespace {

template <typename Dtype>
__global__ void RowExtremesKernel(const NPairSimilarities<Dtype> sim,
    Dtype* pos_threshold, Dtype* neg_threshold) {
  const int i = blockIdx.x;
  const Dtype* s = sim.row(i);
  const Dtype label = sim.labels[i];
  const Dtype inf = HUGE_VAL;
  Dtype neg_max = -inf, pos_min = inf;
  for (int c = threadIdx.x; c < sim.count; c += kBlockThreads) {
    if (c == i) { continue; }
    if (sim.labels[c] == label) {
      pos_min = min(pos_min, s[c]);
    } else {
      neg_max = max(neg_max, s[c]);
    }
  }
  neg_max = BlockAllReduce(neg_max, MaxOp());
  pos_min = BlockAllReduce(pos_min, MinOp());
  if (threadIdx.x == 0) {
    if (pos_threshold) { pos_threshold[i] = neg_max; }
    if (neg_threshold) { neg_threshold[i] = pos_min; }
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

/// Whether mining keeps a pair of similarity s of query i, of the kind
/// `positive`: the rules in double, as NPairKeptRange reads them on the CPU.
template <typename Dtype>
__device__ inline bool Kept(const Dtype s, const bool positive,
    const RowMining<Dtype>& mining, const int i) {
  return positive ?
      NPairKeepPositive(mining.ap_method, s,
          mining.pos_threshold ? mining.pos_threshold[i] : 0,
          mining.margin_ident) :
      NPairKeepNegative(mining.an_method, s,
          mining.neg_threshold ? mining.neg_threshold[i] : 0,
          mining.margin_diff);
}

/// e^x (x <= 0) in the row's own precision, as the CPU path takes it: float
/// rows in float, so the exponential of a float row runs at float rate; the
/// sums stay in double.
__device__ inline float ExpOf(const float x) { return expf(x); }
__device__ inline double ExpOf(const double x) { return exp(x); }

/// One block per query i: row_loss[i] = l_i and row i of weight = G_i. /
/// (g / N), by the one log-sum-exp recipe: each kept pair's exponential,
/// shifted by NPairExpShift, is stored in the row, summed by kind, and
/// scaled by the factors of NPairRowTermsOf. A row without a kept positive
/// is 0, a row with a non-finite s_ic (s_ii included) NaN, for every mining.
/// With ahead, the Recall@K count on the way: the negatives at least as
/// similar as the best positive (kept or not), -1 without a positive.
template <typename Dtype>
__global__ void RowLossAndWeightsKernel(const NPairSimilarities<Dtype> sim,
    const RowMining<Dtype> mining, Dtype* weight, double* row_loss,
    int* ahead) {
  const int i = blockIdx.x;
  const int count = sim.count;
  const Dtype* s = sim.row(i);
  Dtype* w = weight + static_cast<size_t>(i) * sim.ld;
  const Dtype* labels = sim.labels;
  const Dtype label = labels[i];
  // The shifts, and whether the row is finite: s - s is 0 for a finite s and
  // NaN for an infinite or NaN one, and a NaN survives the block's sum. In
  // Dtype, as on the CPU: a maximum of Dtype values is one of them.
  const Dtype inf = HUGE_VAL;
  Dtype max_all = -inf, max_pos = -inf, best_pos = -inf, non_finite = 0;
  int num_kept_pos = 0, num_pos = 0;
  for (int c = threadIdx.x; c < count; c += kBlockThreads) {
    non_finite += s[c] - s[c];
    const bool positive = labels[c] == label;
    if (c == i) { continue; }
    if (positive) {
      best_pos = max(best_pos, s[c]);
      ++num_pos;
    }
    if (Kept(s[c], positive, mining, i)) {
      max_all = max(max_all, s[c]);
      if (positive) {
        max_pos = max(max_pos, s[c]);
        ++num_kept_pos;
      }
    }
  }
  non_finite = BlockAllReduce(non_finite, SumOp());
  num_kept_pos = BlockAllReduce(num_kept_pos, SumOp());
  max_all = BlockAllReduce(max_all, MaxOp());
  max_pos = BlockAllReduce(max_pos, MaxOp());
  const bool recall = ahead && NPairRecallEligible(
      BlockAllReduce(num_pos, SumOp()));  // the same for the block
  if (recall) { best_pos = BlockAllReduce(best_pos, MaxOp()); }
  const bool finite = non_finite == 0;
  const bool terms_to_sum = finite && num_kept_pos > 0;
  // One exponential per kept pair, into the row; 0 for the pairs dropped.
  double sum_neg = 0, sum_pos = 0;
  int count_ahead = 0;
  if (terms_to_sum || recall) {
    for (int c = threadIdx.x; c < count; c += kBlockThreads) {
      const bool positive = labels[c] == label;
      // A negative tied with the best positive ranks ahead of it.
      count_ahead += c != i && !positive && s[c] >= best_pos;
      if (!terms_to_sum) { continue; }
      Dtype e = 0;
      if (c != i && Kept(s[c], positive, mining, i)) {
        // The shift is max_pos or max_all, a Dtype value: s - shift is the
        // CPU's argument, rounded as there.
        e = ExpOf(s[c] - static_cast<Dtype>(
                             NPairExpShift(positive, max_all, max_pos)));
        if (positive) {
          sum_pos += e;
        } else {
          sum_neg += e;
        }
      }
      w[c] = e;
    }
    sum_neg = BlockAllReduce(sum_neg, SumOp());
    sum_pos = BlockAllReduce(sum_pos, SumOp());
    count_ahead = BlockAllReduce(count_ahead, SumOp());
  }
  const NPairRowTerms terms = NPairRowTermsOf(finite, num_kept_pos > 0,
      max_all, max_pos, sum_neg, sum_pos);
  if (threadIdx.x == 0) {
    row_loss[i] = terms.loss;
    if (ahead) { ahead[i] = recall ? count_ahead : -1; }
  }
  // Each thread rescales the entries it wrote, by factors rounded to Dtype
  // as the CPU rounds them; a row with nothing to sum is terms' 0 or NaN
  // throughout.
  const Dtype pos_scale = terms.pos_scale, neg_scale = terms.neg_scale;
  for (int c = threadIdx.x; c < count; c += kBlockThreads) {
    if (terms_to_sum) {
      const bool positive = c != i && labels[c] == label;
      w[c] *= positive ? pos_scale : neg_scale;
    } else {
      w[c] = neg_scale;
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
void RowExtremes(const NPairSimilarities<Dtype>& sim, Dtype* pos_threshold,
    Dtype* neg_threshold) {
  // NOLINT_NEXT_LINE(whitespace/operators)
  RowExtremesKernel<Dtype><<<sim.num, kBlockThreads>>>(sim, pos_threshold,
      neg_threshold);
  CUDA_POST_KERNEL_CHECK;
}

template <typename Dtype>
void BatchExtreme(const int num, const bool take_max, Dtype* threshold) {
  // NOLINT_NEXT_LINE(whitespace/operators)
  BatchExtremeKernel<Dtype><<<1, kBlockThreads>>>(num, take_max, threshold);
  CUDA_POST_KERNEL_CHECK;
}

template <typename Dtype>
void LossAndPairWeights(const NPairSimilarities<Dtype>& sim,
    const RowMining<Dtype>& mining, Dtype* weight, double* row_loss,
    int* ahead) {
  // NOLINT_NEXT_LINE(whitespace/operators)
  RowLossAndWeightsKernel<Dtype><<<sim.num, kBlockThreads>>>(sim, mining,
      weight, row_loss, ahead);
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
  template void RowExtremes(const NPairSimilarities<Dtype>&, Dtype*, \
      Dtype*); \
  template void BatchExtreme(const int, const bool, Dtype*); \
  template void LossAndPairWeights(const NPairSimilarities<Dtype>&, \
      const RowMining<Dtype>&, Dtype*, double*, int*); \
  template void RowAbsSums(const int, const int, const Dtype*, double*); \
  template void WriteTops(const int, const double*, const int*, \
      const double*, const ScalarTops<Dtype>&)

INSTANTIATE_ROW_PASSES(float);
INSTANTIATE_ROW_PASSES(double);

}  // namespace npair_gpu
}  // namespace caffe
