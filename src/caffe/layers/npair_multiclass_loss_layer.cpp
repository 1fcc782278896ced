#include <omp.h>
#include <stdint.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "caffe/layers/npair_multiclass_loss_layer.hpp"
#include "caffe/util/math_functions.hpp"
#include "caffe/util/npair_cpu_passes.hpp"

namespace caffe {

using npair_cpu::Inf;
using npair_cpu::kMinParallelRows;
using npair_cpu::SyrkUpper;
using npair_cpu::MirrorUpper;
using npair_cpu::AddTranspose;
using npair_cpu::MaskedExtreme;
using npair_cpu::BestSame;
using npair_cpu::CountOthersAtLeast;
using npair_cpu::KeptRange;
using npair_cpu::GatherRow;
using npair_cpu::KeepRow;
using npair_cpu::ExpRow;
using npair_cpu::ScaleRow;

namespace {

// S_ij for i in [row_begin, row_end), j != i, with the same (or another)
// label, copied into out; returns how many, and sets *any_nan if one of them
// is NaN. out needs room for (row_end - row_begin) * num values (those rows
// of pair_scratch_ have it), not just for the count returned: see GatherRow.
template <typename Dtype>
int GatherPairs(const Dtype* sim, const Dtype* labels, const int num,
    const int row_begin, const int row_end, const bool same_label,
    Dtype* out, bool* any_nan) {
  int n = 0;
  for (int i = row_begin; i < row_end; ++i) {
    const Dtype* s = sim + i * num;
    const Dtype y0 = labels[i];
    // j == i is no pair, not even for a NaN label (unequal to itself).
    if (same_label) {
      n += GatherRow<true>(s, labels, y0, 0, i, out + n, any_nan);
      n += GatherRow<true>(s, labels, y0, i + 1, num, out + n, any_nan);
    } else {
      n += GatherRow<false>(s, labels, y0, 0, i, out + n, any_nan);
      n += GatherRow<false>(s, labels, y0, i + 1, num, out + n, any_nan);
    }
  }
  return n;
}

// The HARD / EASY threshold of query i alone: the largest negative
// similarity of row i (positives = true), or its smallest positive one;
// j == i is neither.
template <typename Dtype>
Dtype OtherKindExtreme(const Dtype* sim, const Dtype* labels, const int num,
    const int i, const bool positives) {
  const Dtype* s = sim + i * num;
  if (positives) {
    return std::max(MaskedExtreme<true, false>(s, labels, labels[i], 0, i),
        MaskedExtreme<true, false>(s, labels, labels[i], i + 1, num));
  }
  return std::min(MaskedExtreme<false, true>(s, labels, labels[i], 0, i),
      MaskedExtreme<false, true>(s, labels, labels[i], i + 1, num));
}

// The threshold of a RELATIVE_* method from its list of n similarities,
// which it reorders: the entry NPairRelativePosition(n, sn) of the list
// sorted; -inf / +inf (positives / negatives) for an empty list.
template <typename Dtype>
Dtype RankOf(Dtype* list, const int n, const bool any_nan,
    const bool positives, const float sn) {
  if (n == 0) {
    return (positives ? -1 : 1) * Inf<Dtype>();
  }
  // NaN has no rank; the rows it came from have a NaN loss anyway.
  if (any_nan) { return std::numeric_limits<Dtype>::quiet_NaN(); }
  // Selection, not a sort: only the one rank is needed.
  Dtype* nth = list + NPairRelativePosition(n, sn);
  std::nth_element(list, nth, list + n);
  return *nth;
}

// The GLOBAL RELATIVE_* threshold: the rank over every pair of the batch of
// the kind chosen by positives. Each thread gathers its block of rows into
// those rows of lists (N x N), then the slices are closed up in row order:
// the list is the same for any number of threads.
template <typename Dtype>
Dtype GlobalRank(const Dtype* sim, const Dtype* labels, const int num,
    const bool positives, const float sn, Dtype* lists) {
  vector<int> slice_begin, slice_size;
  bool any_nan = false;
#pragma omp parallel reduction(||: any_nan) if (num >= kMinParallelRows)
  {
    const int threads = omp_get_num_threads();
    const int t = omp_get_thread_num();
#pragma omp single
    {
      slice_begin.assign(threads, 0);
      slice_size.assign(threads, 0);
    }  // (the implicit barrier of single: both are sized from here on)
    const int begin = static_cast<int>(static_cast<int64_t>(num) * t /
                                       threads);
    const int end = static_cast<int>(static_cast<int64_t>(num) * (t + 1) /
                                     threads);
    slice_begin[t] = begin;
    slice_size[t] = GatherPairs(sim, labels, num, begin, end, positives,
                                lists + begin * num, &any_nan);
  }
  int n = 0;
  for (int t = 0; t < slice_size.size(); ++t) {
    // Every slice moves left, onto values already moved or its own.
    const Dtype* slice = lists + slice_begin[t] * num;
    std::copy(slice, slice + slice_size[t], lists + n);
    n += slice_size[t];
  }
  return RankOf(lists, n, any_nan, positives, sn);
}

// Row i of G / (g / N) into w, from row i of S (s) and the query's
// thresholds; returns l_i.
template <typename Dtype>
double LossAndPairWeightsOfRow(const NPairLossParameter& param,
    const Dtype* s, const Dtype* labels, const int num, const int i,
    const Dtype pos_threshold, const Dtype neg_threshold, Dtype* w) {
  const Dtype y0 = labels[i];
  Dtype lo_pos, hi_pos, lo_neg, hi_neg;
  KeptRange(true, param.ap_mining_method(), pos_threshold,
            param.margin_ident(), &lo_pos, &hi_pos);
  KeptRange(false, param.an_mining_method(), neg_threshold,
            param.margin_diff(), &lo_neg, &hi_neg);
  // w = the similarities of the kept pairs, -inf elsewhere (j == i
  // included); S_ii still counts for whether the row is finite.
  Dtype max_all = -Inf<Dtype>(), max_pos = -Inf<Dtype>();
  bool finite = std::isfinite(s[i]);
  finite &= KeepRow(s, labels, y0, lo_pos, hi_pos, lo_neg, hi_neg, 0, i, w,
                    &max_all, &max_pos);
  finite &= KeepRow(s, labels, y0, lo_pos, hi_pos, lo_neg, hi_neg, i + 1,
                    num, w, &max_all, &max_pos);
  w[i] = -Inf<Dtype>();
  const bool kept_positive = max_pos != -Inf<Dtype>();
  double sum_neg = 0, sum_pos = 0;
  if (finite && kept_positive) {
    ExpRow(w, labels, y0, max_all, max_pos, num, &sum_neg, &sum_pos);
  }
  const NPairRowTerms terms = NPairRowTermsOf(finite, kept_positive, max_all,
      max_pos, sum_neg, sum_pos);
  if (finite && kept_positive) {
    ScaleRow(w, labels, y0, static_cast<Dtype>(terms.pos_scale),
             static_cast<Dtype>(terms.neg_scale), num);
  } else {  // G_i. = 0 (l_i is a constant), or NaN (a non-finite row).
    std::fill(w, w + num, static_cast<Dtype>(terms.neg_scale));
  }
  return terms.loss;
}

}  // namespace

template <typename Dtype>
void NPairMultiClassLossLayer<Dtype>::LayerSetUp(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  // LossLayer's default weighs a single top; the monitors must weigh 0, and
  // Layer::SetLossWeights wants one weight per top once any is given.
  if (this->layer_param_.loss_weight_size() == 0) {
    this->layer_param_.add_loss_weight(Dtype(1));
    for (int i = 1; i < top.size(); ++i) {
      this->layer_param_.add_loss_weight(Dtype(0));
    }
  }
  CheckNPairLossParameter(this->layer_param_.npair_loss_param(), type());
}

template <typename Dtype>
void NPairMultiClassLossLayer<Dtype>::Reshape(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  // Caffe lets a blob have no axes or a zero dimension; the loss of an empty
  // batch would be 0 / 0, and an empty blob has no memory to read.
  CHECK(bottom[0]->num_axes() >= 1 && bottom[0]->count() > 0) << type()
      << " Layer: bottom[0] (the features) must hold N >= 1 samples of at "
      "least one value each; got shape " << bottom[0]->shape_string();
  const int num = bottom[0]->shape(0);
  CHECK(bottom[1]->num_axes() >= 1 && bottom[1]->shape(0) == num &&
        bottom[1]->count() == num) << type() << " Layer: bottom[1] must hold "
      "exactly one label per sample, with the batch size N = " << num
      << " as its first axis; got shape " << bottom[1]->shape_string();
  // The N x N buffers are indexed with int, as everything in Caffe is.
  const int max_num = 46340;  // floor(sqrt(INT_MAX))
  CHECK_LE(num, max_num) << type() << " Layer: a batch of " << num
      << " samples needs N x N similarity buffers larger than Caffe's int "
      "indexing allows; split the batch (at most " << max_num << ")";
  LossLayer<Dtype>::Reshape(bottom, top);
  const vector<int> scalar(0);
  for (int i = 1; i < top.size(); ++i) {
    top[i]->Reshape(scalar);
  }
  vector<int> pairs_shape(2, num);
  sim_.Reshape(pairs_shape);
  pair_weight_.Reshape(pairs_shape);
  pair_scratch_.Reshape(pairs_shape);
  const vector<int> rows_shape(1, num);
  pos_threshold_.Reshape(rows_shape);
  neg_threshold_.Reshape(rows_shape);
  row_loss_.resize(num);
  gpu_row_loss_.Reshape(rows_shape);
  gpu_row_asum_.Reshape(rows_shape);
  gpu_recall_ahead_.Reshape(rows_shape);
}

template <typename Dtype>
void NPairMultiClassLossLayer<Dtype>::Similarity_cpu(
    const Blob<Dtype>& features) {
  const int num = features.shape(0);
  const int dim = features.count(1);
  Dtype* sim = sim_.mutable_cpu_data();
  // S is symmetric: syrk computes one triangle (half a GEMM's work), and
  // mirroring it makes S_ij and S_ji one value, as the GLOBAL lists need.
  SyrkUpper(num, dim, features.cpu_data(), sim);
  MirrorUpper(num, sim);
}

template <typename Dtype>
void NPairMultiClassLossLayer<Dtype>::Thresholds_cpu(const Dtype* labels,
    const bool positives, const NPairLossParameter_MiningRegion region,
    const NPairMiningMethod method, const float sn, Dtype* threshold) {
  if (method == NPairLossParameter_MiningMethod_RAND) {
    return;  // RAND keeps every pair and compares with nothing.
  }
  const int num = sim_.shape(0);
  const Dtype* sim = sim_.cpu_data();
  const bool global = region == NPairLossParameter_MiningRegion_GLOBAL;
  if (!NPairIsRelative(method)) {
    // HARD and EASY: each row's extreme of the other kind, and for GLOBAL
    // the extreme of those, taken in row order.
#pragma omp parallel for if (num >= kMinParallelRows)
    for (int i = 0; i < num; ++i) {
      threshold[i] = OtherKindExtreme(sim, labels, num, i, positives);
    }
    if (global) {
      const Dtype t = positives ? *std::max_element(threshold, threshold + num)
                                : *std::min_element(threshold, threshold + num);
      std::fill(threshold, threshold + num, t);
    }
    return;
  }
  // RELATIVE_* rank the pairs of their own kind, listed in pair_scratch_.
  Dtype* lists = pair_scratch_.mutable_cpu_data();
  if (global) {
    std::fill(threshold, threshold + num,
              GlobalRank(sim, labels, num, positives, sn, lists));
    return;
  }
#pragma omp parallel for schedule(dynamic, 16) if (num >= kMinParallelRows)
  for (int i = 0; i < num; ++i) {
    Dtype* list = lists + i * num;  // row i of pair_scratch_
    bool any_nan = false;
    const int n = GatherPairs(sim, labels, num, i, i + 1, positives, list,
                              &any_nan);
    threshold[i] = RankOf(list, n, any_nan, positives, sn);
  }
}

template <typename Dtype>
Dtype NPairMultiClassLossLayer<Dtype>::LossAndPairWeights_cpu(
    const Dtype* labels) {
  const int num = sim_.shape(0);
  // The rows in parallel, their losses added in row order: the loss is the
  // same for any number of threads. In double: l_i is a difference of two
  // log-sum-exps that can be much larger than it.
  const NPairLossParameter& param = this->layer_param_.npair_loss_param();
  const Dtype* sim = sim_.cpu_data();
  const Dtype* pos_threshold = pos_threshold_.cpu_data();
  const Dtype* neg_threshold = neg_threshold_.cpu_data();
  Dtype* weight = pair_weight_.mutable_cpu_data();
  // (Every blob is reached here, outside the parallel loop: a blob's first
  // access allocates its memory.)
#pragma omp parallel for schedule(dynamic, 16) if (num >= kMinParallelRows)
  for (int i = 0; i < num; ++i) {
    row_loss_[i] = LossAndPairWeightsOfRow(param, sim + i * num, labels, num,
        i, pos_threshold[i], neg_threshold[i], weight + i * num);
  }
  double loss = 0;
  for (int i = 0; i < num; ++i) { loss += row_loss_[i]; }
  return loss / num;
}

template <typename Dtype>
void NPairMultiClassLossLayer<Dtype>::RecallAtK_cpu(const Dtype* labels,
    const vector<Blob<Dtype>*>& top) {
  const int num = sim_.shape(0);
  const Dtype* sim = sim_.cpu_data();
  int eligible = 0, hits_1 = 0, hits_5 = 0, hits_10 = 0;  // integer: exact
#pragma omp parallel for schedule(dynamic, 16) if (num >= kMinParallelRows) \
    reduction(+: eligible, hits_1, hits_5, hits_10)
  for (int i = 0; i < num; ++i) {
    const Dtype* s = sim + i * num;
    const Dtype y0 = labels[i];
    int positives = 0;
    const Dtype best_positive = std::max(
        BestSame(s, labels, y0, 0, i, &positives),
        BestSame(s, labels, y0, i + 1, num, &positives));
    if (!NPairRecallEligible(positives)) { continue; }
    ++eligible;
    // A negative tied with the best positive ranks ahead of it, so collapsed
    // embeddings score low rather than perfect.
    const int ahead =
        CountOthersAtLeast(s, labels, y0, best_positive, 0, i) +
        CountOthersAtLeast(s, labels, y0, best_positive, i + 1, num);
    hits_1 += ahead < 1;
    hits_5 += ahead < 5;
    hits_10 += ahead < 10;
  }
  const int hits[] = {hits_1, hits_5, hits_10};  // K = 1, 5, 10: top order
  const int num_k = top.size() - 2;  // The tops between loss and asum.
  for (int k = 0; k < num_k; ++k) {
    top[1 + k]->mutable_cpu_data()[0] =
        eligible ? Dtype(hits[k]) / eligible : Dtype(0);
  }
}

template <typename Dtype>
void NPairMultiClassLossLayer<Dtype>::Forward_cpu(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  const NPairLossParameter& param = this->layer_param_.npair_loss_param();
  const Dtype* features = bottom[0]->cpu_data();
  const Dtype* labels = bottom[1]->cpu_data();
  Similarity_cpu(*bottom[0]);
  Thresholds_cpu(labels, true, param.ap_mining_region(),
      param.ap_mining_method(), param.identsn(),
      pos_threshold_.mutable_cpu_data());
  Thresholds_cpu(labels, false, param.an_mining_region(),
      param.an_mining_method(), param.diffsn(),
      neg_threshold_.mutable_cpu_data());
  top[0]->mutable_cpu_data()[0] = LossAndPairWeights_cpu(labels);
  if (top.size() > 1) {
    RecallAtK_cpu(labels, top);
    top.back()->mutable_cpu_data()[0] =
        caffe_cpu_asum(bottom[0]->count(), features) / bottom[0]->shape(0);
  }
}

template <typename Dtype>
Dtype NPairMultiClassLossLayer<Dtype>::GradientScale(
    const vector<Blob<Dtype>*>& top, const vector<bool>& propagate_down,
    const int num) const {
  CHECK(!propagate_down[1]) << type()
      << " Layer cannot backpropagate to label inputs (bottom[1]).";
  return top[0]->cpu_diff()[0] / num;
}

template <typename Dtype>
void NPairMultiClassLossLayer<Dtype>::Backward_cpu(
    const vector<Blob<Dtype>*>& top, const vector<bool>& propagate_down,
    const vector<Blob<Dtype>*>& bottom) {
  const int num = bottom[0]->shape(0);
  const Dtype alpha = GradientScale(top, propagate_down, num);
  if (!propagate_down[0]) { return; }
  const int dim = bottom[0]->count(1);
  // (G + G^T) X as one GEMM, G + G^T in pair_scratch_ (free once Forward has
  // its thresholds); pair_weight_ keeps G, so Backward can run again.
  Dtype* weight_sum = pair_scratch_.mutable_cpu_data();
  AddTranspose(num, pair_weight_.cpu_data(), weight_sum);
  caffe_cpu_gemm<Dtype>(CblasNoTrans, CblasNoTrans, num, dim, num, alpha,
      weight_sum, bottom[0]->cpu_data(), Dtype(0),
      bottom[0]->mutable_cpu_diff());
}

#ifdef CPU_ONLY
STUB_GPU(NPairMultiClassLossLayer);
#endif

INSTANTIATE_CLASS(NPairMultiClassLossLayer);
REGISTER_LAYER_CLASS(NPairMultiClassLoss);

}  // namespace caffe
