#include <omp.h>
#include <stdint.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "caffe/util/npair_cpu_threads.hpp"
#include "caffe/util/npair_miner.hpp"
#include "caffe/util/npair_radix_select.hpp"
#include "caffe/util/npair_row_kernels.hpp"

namespace caffe {

using npair_cpu::kMinParallelRows;
using npair_cpu::NPairRow;
using npair_cpu::NPairRowKernels;
using npair_cpu::NPairRowKernelsForCpu;

namespace {

typedef NPairLossParameter P;

template <typename Dtype>
Dtype Inf() { return std::numeric_limits<Dtype>::infinity(); }

template <typename Dtype>
NPairRow<Dtype> RowOf(const NPairSimilarities<Dtype>& sim, const int i) {
  const NPairRow<Dtype> row = {sim.row(i), sim.labels, sim.count, i,
                               sim.labels[i]};
  return row;
}

// The threshold of a RELATIVE_* method from its list of n similarities,
// which it reorders: the entry NPairRelativePosition(n, sn) of the list
// sorted; -inf / +inf (thresholds of positives / negatives) for an empty
// list, NaN for a list with a NaN (it has no order).
template <typename Dtype>
Dtype RankOf(Dtype* list, const int64_t n, const bool any_nan,
    const bool of_positives, const float sn) {
  if (n == 0) { return (of_positives ? -1 : 1) * Inf<Dtype>(); }
  if (any_nan) { return std::numeric_limits<Dtype>::quiet_NaN(); }
  // Selection, not a sort: only the one rank is needed.
  Dtype* nth = list + NPairRelativePosition(static_cast<int>(n), sn);
  std::nth_element(list, nth, list + n);
  return *nth;
}

/// Appends the s_j of the row's negatives to out, in column order; returns
/// how many, and sets *any_nan if one of them is NaN (a list with a NaN has
/// no order to select from). out needs room for C values.
template <typename Dtype>
int GatherNegatives(const NPairRow<Dtype>& row, Dtype* out, bool* any_nan) {
  int n = 0;
  bool nan = false;
  for (int j = 0; j < row.count; ++j) {  // Branch-free: out[n] is overwritten
    out[n] = row.s[j];                    // until a wanted value stays there.
    const bool wanted = (j != row.self) & (row.labels[j] != row.label);
    nan |= wanted & (out[n] != out[n]);
    n += wanted;
  }
  *any_nan |= nan;
  return n;
}

// Appends the similarities of query i's positives to out; returns how many.
template <typename Dtype>
int GatherPositives(const NPairSimilarities<Dtype>& sim,
    const NPairPositiveIndex& positives, const int i, Dtype* out,
    bool* any_nan) {
  const Dtype* s = sim.row(i);
  int n = 0;
  for (const int* c = positives.group_begin(i); c != positives.group_end(i);
       ++c) {
    if (*c == i) { continue; }
    out[n] = s[*c];
    *any_nan |= std::isnan(out[n]);
    ++n;
  }
  return n;
}

// The smallest similarity of query i's positives (+inf when none; a NaN
// never wins, as in the row passes' extremes).
template <typename Dtype>
Dtype LeastPositive(const NPairSimilarities<Dtype>& sim,
    const NPairPositiveIndex& positives, const int i) {
  const Dtype* s = sim.row(i);
  Dtype least = Inf<Dtype>();
  for (const int* c = positives.group_begin(i); c != positives.group_end(i);
       ++c) {
    if (*c != i && s[*c] < least) { least = s[*c]; }
  }
  return least;
}

// Every threshold the batch-wide (GLOBAL) value: the largest (take_max) or
// smallest of the per-query ones.
template <typename Dtype>
void SpreadExtreme(const int num, const bool take_max, Dtype* threshold) {
  const Dtype t = take_max ? *std::max_element(threshold, threshold + num)
                           : *std::min_element(threshold, threshold + num);
  std::fill(threshold, threshold + num, t);
}

}  // namespace

template <typename Dtype>
NPairMiner<Dtype>::NPairMiner(const NPairLossParameter& param,
    const std::string& layer_type)
    : param_(param), radix_state_(sizeof(NPairRadixState)) {
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

template <typename Dtype>
void NPairMiner<Dtype>::Reshape(const int num, const int count) {
  const std::vector<int> rows(1, num);
  pos_threshold_.Reshape(rows);
  neg_threshold_.Reshape(rows);
  std::vector<int> lists_shape(2, num);
  lists_shape[1] = count;
  lists_.Reshape(lists_shape);
}

template <typename Dtype>
void NPairMiner<Dtype>::Mine_cpu(const NPairSimilarities<Dtype>& sim,
    const NPairPositiveIndex& positives) {
  if (param_.ap_mining_method() != P::RAND) {
    ThresholdOfPositives_cpu(sim, positives,
                             pos_threshold_.mutable_cpu_data());
  }
  if (param_.an_mining_method() != P::RAND) {
    ThresholdOfNegatives_cpu(sim, positives,
                             neg_threshold_.mutable_cpu_data());
  }
}

template <typename Dtype>
void NPairMiner<Dtype>::ThresholdOfPositives_cpu(
    const NPairSimilarities<Dtype>& sim, const NPairPositiveIndex& positives,
    Dtype* threshold) {
  const int num = sim.num;
  const bool global = param_.ap_mining_region() == P::GLOBAL;
  const float sn = param_.identsn();
  if (!NPairIsRelative(param_.ap_mining_method())) {
    // HARD / EASY: the most similar negative, by a sweep of each row.
    const NPairRowKernels<Dtype>& kernels = NPairRowKernelsForCpu<Dtype>();
#pragma omp parallel for schedule(dynamic, 16) if (num >= kMinParallelRows)
    for (int i = 0; i < num; ++i) {
      threshold[i] = kernels.max_negative(RowOf(sim, i));
    }
    if (global) { SpreadExtreme(num, true, threshold); }
    return;
  }
  // RELATIVE_*: a rank among the positives, which the index lists.
  Dtype* lists = lists_.mutable_cpu_data();
  if (global) {
    // In query order: the list is the same for any number of threads.
    int64_t n = 0;
    bool any_nan = false;
    for (int i = 0; i < num; ++i) {
      n += GatherPositives(sim, positives, i, lists + n, &any_nan);
    }
    std::fill(threshold, threshold + num,
              RankOf(lists, n, any_nan, true, sn));
    return;
  }
#pragma omp parallel for schedule(dynamic, 16) if (num >= kMinParallelRows)
  for (int i = 0; i < num; ++i) {
    Dtype* list = lists + static_cast<size_t>(i) * sim.count;
    bool any_nan = false;
    const int n = GatherPositives(sim, positives, i, list, &any_nan);
    threshold[i] = RankOf(list, n, any_nan, true, sn);
  }
}

template <typename Dtype>
void NPairMiner<Dtype>::ThresholdOfNegatives_cpu(
    const NPairSimilarities<Dtype>& sim, const NPairPositiveIndex& positives,
    Dtype* threshold) {
  const int num = sim.num;
  const bool global = param_.an_mining_region() == P::GLOBAL;
  const float sn = param_.diffsn();
  if (!NPairIsRelative(param_.an_mining_method())) {
    // HARD / EASY: the least similar positive, from the index.
    for (int i = 0; i < num; ++i) {
      threshold[i] = LeastPositive(sim, positives, i);
    }
    if (global) { SpreadExtreme(num, false, threshold); }
    return;
  }
  // RELATIVE_*: a rank among the negatives, gathered by sweeping the rows.
  Dtype* lists = lists_.mutable_cpu_data();
  const size_t stride = sim.count;
  if (!global) {
#pragma omp parallel for schedule(dynamic, 16) if (num >= kMinParallelRows)
    for (int i = 0; i < num; ++i) {
      Dtype* list = lists + i * stride;
      bool any_nan = false;
      const int n = GatherNegatives(RowOf(sim, i), list, &any_nan);
      threshold[i] = RankOf(list, n, any_nan, false, sn);
    }
    return;
  }
  // Each query's negatives into its row of lists, then the rows closed up
  // in query order: the list is the same for any number of threads.
  std::vector<int> size(num);
  bool any_nan = false;
#pragma omp parallel for schedule(dynamic, 16) reduction(||: any_nan) \
    if (num >= kMinParallelRows)
  for (int i = 0; i < num; ++i) {
    size[i] = GatherNegatives(RowOf(sim, i), lists + i * stride,
                                         &any_nan);
  }
  int64_t n = 0;
  for (int i = 0; i < num; ++i) {
    // Each row moves left, onto values already moved or its own.
    std::copy(lists + i * stride, lists + i * stride + size[i], lists + n);
    n += size[i];
  }
  std::fill(threshold, threshold + num, RankOf(lists, n, any_nan, false, sn));
}

template <typename Dtype>
NPairKeptBounds<Dtype> NPairMiner<Dtype>::KeptBounds_cpu(const int i) const {
  // RAND compares with no threshold, and Mine_cpu leaves it unset.
  const bool ap_rand = param_.ap_mining_method() == P::RAND;
  const bool an_rand = param_.an_mining_method() == P::RAND;
  NPairKeptBounds<Dtype> kept;
  NPairKeptRange<Dtype>(true, param_.ap_mining_method(),
      ap_rand ? 0 : pos_threshold_.cpu_data()[i], param_.margin_ident(),
      &kept.lo_pos, &kept.hi_pos);
  NPairKeptRange<Dtype>(false, param_.an_mining_method(),
      an_rand ? 0 : neg_threshold_.cpu_data()[i], param_.margin_diff(),
      &kept.lo_neg, &kept.hi_neg);
  return kept;
}

namespace {

// The largest Dtype <= b (RoundDown) and the smallest Dtype >= b (RoundUp).
template <typename Dtype>
Dtype RoundDown(const double b) {
  const double top = std::numeric_limits<Dtype>::max();
  if (b > top) { return std::isinf(b) ? Inf<Dtype>() : Dtype(top); }
  if (b < -top) { return -Inf<Dtype>(); }
  const Dtype f = static_cast<Dtype>(b);
  return (f > b) ? std::nextafter(f, -Inf<Dtype>()) : f;
}
template <typename Dtype>
Dtype RoundUp(const double b) {
  const double top = std::numeric_limits<Dtype>::max();
  if (b > top) { return Inf<Dtype>(); }
  if (b < -top) { return std::isinf(b) ? -Inf<Dtype>() : Dtype(-top); }
  const Dtype f = static_cast<Dtype>(b);
  return (f < b) ? std::nextafter(f, Inf<Dtype>()) : f;
}

}  // namespace

template <typename Dtype>
void NPairKeptRange(const bool positive, const NPairMiningMethod method,
    const double t, const double m, Dtype* lo, Dtype* hi) {
  bool keep[3];  // s below, at and above t + m
  for (int k = 0; k < 3; ++k) {
    keep[k] = positive ? NPairKeepPositive(method, k - 1, 0, 0)
                       : NPairKeepNegative(method, k - 1, 0, 0);
  }
  CHECK(keep[0] || keep[2]) << "a mining rule must keep an interval";
  const Dtype inf = Inf<Dtype>();
  if (keep[0] && keep[2]) {
    *lo = -inf;
    *hi = inf;
    return;
  }
  const double b = t + m;
  *lo = keep[0] ? -inf : keep[1] ? RoundUp<Dtype>(b)
                       : std::nextafter(RoundDown<Dtype>(b), inf);
  *hi = keep[2] ? inf : keep[1] ? RoundDown<Dtype>(b)
                      : std::nextafter(RoundUp<Dtype>(b), -inf);
}

template void NPairKeptRange<float>(bool, NPairMiningMethod, double, double,
    float*, float*);
template void NPairKeptRange<double>(bool, NPairMiningMethod, double, double,
    double*, double*);

INSTANTIATE_CLASS(NPairMiner);

}  // namespace caffe
