#ifndef CAFFE_TEST_NPAIR_AGREEMENT_HPP_
#define CAFFE_TEST_NPAIR_AGREEMENT_HPP_

// How the tests hold one run of NPairMultiClassLossLayer to another run of
// the same batch and mining (the CUDA path to the CPU path, a float layer to
// a double one): the batches, the minings, a runner that keeps one layer
// object across batches, and the comparison.
//
// A gradient's error is measured against the reference gradient's largest
// element, as docs/layer_contract.md §5 measures it, with no floor: the
// gradients of these batches are far below 1, and a floor of 1 would make
// the check absolute and let a gradient wrong by several percent through. A
// scalar top is measured against itself.

#include <stdint.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "gtest/gtest.h"

#include "caffe/blob.hpp"
#include "caffe/layers/npair_multiclass_loss_layer.hpp"
#include "caffe/util/math_functions.hpp"

namespace caffe {

/// How far a run may be from its reference (NPairRunsAgree) when the less
/// precise of the two runs is in Dtype. Float: a float CPU run against a double
/// CPU run of the grid batches below (N = 37, 300, 1001, every mining) is
/// off by at most 7.2e-8 in the loss and 5.9e-7 of the gradient's largest
/// element; 1e-5 leaves room for the CUDA path's other summation orders and
/// exponentials, and a gradient 1% wrong fails by a factor of a thousand.
/// Double: float's errors scaled by double's rounding, 2^29 times finer, are
/// about 1e-15; 1e-12 leaves room for exp and log, which the device and the
/// host round differently.
template <typename Dtype> double NPairAgreementTolerance();
template <> inline double NPairAgreementTolerance<float>() { return 1e-5; }
template <> inline double NPairAgreementTolerance<double>() { return 1e-12; }

/// The largest |a_i - b_i| over the largest |b_i|: the error of `a` against
/// the reference `b`, relative to b's largest element. For an all-zero b it
/// is 0 when a is all zero too, else infinite: a reference with nothing to
/// learn (no kept positive, so G = 0) gives exact zeros, 0 x = 0, on any
/// path. NaN when either holds a NaN.
template <typename A, typename B>
double NPairErrorRelativeToLargest(const vector<A>& a, const vector<B>& b) {
  CHECK_EQ(a.size(), b.size());
  double error = 0, largest = 0;
  for (int i = 0; i < a.size(); ++i) {
    const double d = std::fabs(static_cast<double>(a[i]) - b[i]);
    if (std::isnan(d)) { return d; }
    error = std::max(error, d);
    largest = std::max(largest, std::fabs(static_cast<double>(b[i])));
  }
  if (error == 0) { return 0; }
  return largest == 0 ? std::numeric_limits<double>::infinity()
                      : error / largest;
}

/// What one Forward and Backward produced.
template <typename Dtype>
struct NPairRun {
  vector<Dtype> tops;  ///< every top's value, in top order
  /// bottom[b]'s diff for every bottom that Backward propagates to, in order
  vector<vector<Dtype> > diffs;
};

/// Success when run agrees with reference within tolerance: the loss and
/// feature_asum relative to themselves, every gradient relative to its own
/// largest element (NPairErrorRelativeToLargest), and R@K exactly (the
/// batches keep every Recall@K count clear of rounding).
template <typename A, typename B>
::testing::AssertionResult NPairRunsAgree(const NPairRun<A>& run,
    const NPairRun<B>& reference, const double tolerance) {
  const int num_tops = reference.tops.size();
  if (run.tops.size() != num_tops || run.diffs.size() !=
      reference.diffs.size()) {
    return ::testing::AssertionFailure() << "different tops or bottoms";
  }
  for (int t = 0; t < num_tops; ++t) {
    const bool recall = t > 0 && t < num_tops - 1;
    const vector<A> a(1, run.tops[t]);
    const vector<B> b(1, reference.tops[t]);
    const double error = NPairErrorRelativeToLargest(a, b);
    // A ratio of two counts, rounded to run's type.
    if (recall ? a[0] != static_cast<A>(b[0]) : !(error <= tolerance)) {
      return ::testing::AssertionFailure() << "top " << t << ": " << a[0]
          << " against " << b[0] << " (relative error " << error << ")";
    }
  }
  for (int d = 0; d < reference.diffs.size(); ++d) {
    const double error =
        NPairErrorRelativeToLargest(run.diffs[d], reference.diffs[d]);
    if (!(error <= tolerance)) {
      return ::testing::AssertionFailure() << "gradient " << d
          << ": error " << error << " of its largest element, above "
          << tolerance;
    }
  }
  return ::testing::AssertionSuccess();
}

/// A reproducible integer in [0, n), independent of Caffe's generators.
class NPairDraw {
 public:
  explicit NPairDraw(const uint64_t seed) : state_(seed) {}
  int operator()(const int n) {
    state_ = state_ * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<int>((state_ >> 33) % n);
  }

 private:
  uint64_t state_;
};

/// A batch as values, so that a float and a double layer can run the same
/// one: the layer's bottoms in order, and which of them Backward propagates
/// to.
struct NPairBatch {
  vector<vector<int> > shapes;
  vector<vector<double> > values;
  vector<bool> propagate_down;
};

/// N x D features on a grid of eighths and labels of `classes` values:
/// every product and sum of a row is exact in float, so every path and
/// precision sees the same S (ties included) and must mine the same pairs;
/// only exp, log and summation order may differ.
inline NPairBatch NPairGridBatch(const int num, const int dim,
    const int classes, NPairDraw* draw) {
  NPairBatch batch;
  vector<int> shape(2, num);
  shape[1] = dim;
  batch.shapes.push_back(shape);
  batch.shapes.push_back(vector<int>(1, num));
  batch.values.resize(2);
  for (int i = 0; i < num * dim; ++i) {
    batch.values[0].push_back(((*draw)(7) - 3) / 8.);
  }
  for (int i = 0; i < num; ++i) { batch.values[1].push_back((*draw)(classes)); }
  batch.propagate_down.push_back(true);
  batch.propagate_down.push_back(false);  // the labels: never
  return batch;
}

/// The batch with M references appended (bottoms 2 and 3): M x D rows on
/// the same grid, labels of `classes` values, so that some are positives of
/// the batch's queries; Backward propagates to the references too.
inline NPairBatch NPairWithReferences(NPairBatch batch, const int refs,
    const int classes, NPairDraw* draw) {
  const int dim = batch.shapes[0][1];
  vector<int> shape(2, refs);
  shape[1] = dim;
  batch.shapes.push_back(shape);
  batch.shapes.push_back(vector<int>(1, refs));
  batch.values.resize(4);
  for (int i = 0; i < refs * dim; ++i) {
    batch.values[2].push_back(((*draw)(7) - 3) / 8.);
  }
  for (int i = 0; i < refs; ++i) { batch.values[3].push_back((*draw)(classes)); }
  batch.propagate_down.push_back(true);
  batch.propagate_down.push_back(false);  // their labels: never
  return batch;
}

/// A mining with one of four sets of margins and sn, by `variant`.
inline NPairLossParameter NPairMining(
    const NPairLossParameter::MiningRegion ap_region,
    const NPairLossParameter::MiningMethod ap_method,
    const NPairLossParameter::MiningRegion an_region,
    const NPairLossParameter::MiningMethod an_method, const int variant) {
  const float identsn[] = {-0.3f, 2.0f, -0.0f, -1.0f};
  const float diffsn[] = {-0.0f, 1.0f, -0.3f, 5.0f};
  const float margin_ident[] = {0.0f, 0.125f, -0.25f, 0.0f};
  const float margin_diff[] = {-0.05f, 0.0f, 0.125f, 0.0f};
  NPairLossParameter p;
  p.set_ap_mining_region(ap_region);
  p.set_ap_mining_method(ap_method);
  p.set_an_mining_region(an_region);
  p.set_an_mining_method(an_method);
  p.set_identsn(identsn[variant % 4]);
  p.set_diffsn(diffsn[variant % 4]);
  p.set_margin_ident(margin_ident[variant % 4]);
  p.set_margin_diff(margin_diff[variant % 4]);
  return p;
}

/// Mining number `index` of the 100 (region, method) pairs for positives and
/// negatives: index = ((ap_region * 5 + ap_method) * 2 + an_region) * 5 +
/// an_method, in the orders LOCAL, GLOBAL and HARD, EASY, RAND,
/// RELATIVE_HARD, RELATIVE_EASY; variant index % 4.
inline NPairLossParameter NPairMining(const int index) {
  typedef NPairLossParameter P;
  const P::MiningRegion regions[] = {P::LOCAL, P::GLOBAL};
  const P::MiningMethod methods[] = {P::HARD, P::EASY, P::RAND,
                                     P::RELATIVE_HARD, P::RELATIVE_EASY};
  return NPairMining(regions[index / 50 % 2], methods[index / 10 % 5],
                     regions[index / 5 % 2], methods[index % 5], index);
}

/// One layer object with num_tops tops, run on one batch after another in
/// Caffe's current mode: each Run reshapes the layer to its batch, as a net
/// does when its input changes size.
template <typename Dtype>
class NPairLayerRunner {
 public:
  NPairLayerRunner(const NPairLossParameter& p, const int num_tops)
      : set_up_(false) {
    LayerParameter param;
    param.mutable_npair_loss_param()->CopyFrom(p);
    layer_.reset(new NPairMultiClassLossLayer<Dtype>(param));
    for (int t = 0; t < num_tops; ++t) {
      blobs_.push_back(shared_ptr<Blob<Dtype> >(new Blob<Dtype>()));
      top_.push_back(blobs_.back().get());
    }
  }

  /// Forward, then Backward with `weight` as top[0]'s diff; every diff
  /// Backward writes is filled with garbage first, to see it overwritten.
  NPairRun<Dtype> Run(const NPairBatch& batch, const Dtype weight) {
    while (bottom_.size() < batch.values.size()) {
      blobs_.push_back(shared_ptr<Blob<Dtype> >(new Blob<Dtype>()));
      bottom_.push_back(blobs_.back().get());
    }
    const vector<Blob<Dtype>*> bottom(bottom_.begin(),
                                      bottom_.begin() + batch.values.size());
    for (int b = 0; b < bottom.size(); ++b) {
      bottom[b]->Reshape(batch.shapes[b]);
      if (bottom[b]->count() > 0) {  // (an empty blob has no memory)
        std::copy(batch.values[b].begin(), batch.values[b].end(),
                  bottom[b]->mutable_cpu_data());
      }
    }
    if (!set_up_) {
      layer_->SetUp(bottom, top_);
      set_up_ = true;
    }
    layer_->Forward(bottom, top_);
    top_[0]->mutable_cpu_diff()[0] = weight;
    for (int b = 0; b < bottom.size(); ++b) {
      if (batch.propagate_down[b] && bottom[b]->count() > 0) {
        caffe_set(bottom[b]->count(), Dtype(7), bottom[b]->mutable_cpu_diff());
      }
    }
    layer_->Backward(top_, batch.propagate_down, bottom);
    NPairRun<Dtype> out;
    for (int t = 0; t < top_.size(); ++t) {
      out.tops.push_back(top_[t]->cpu_data()[0]);
    }
    for (int b = 0; b < bottom.size(); ++b) {
      if (batch.propagate_down[b]) {
        out.diffs.push_back(bottom[b]->count() == 0 ? vector<Dtype>() :
            vector<Dtype>(bottom[b]->cpu_diff(),
                          bottom[b]->cpu_diff() + bottom[b]->count()));
      }
    }
    return out;
  }

 private:
  shared_ptr<NPairMultiClassLossLayer<Dtype> > layer_;
  vector<shared_ptr<Blob<Dtype> > > blobs_;  // every top and bottom
  vector<Blob<Dtype>*> top_;
  vector<Blob<Dtype>*> bottom_;
  bool set_up_;
};

}  // namespace caffe

#endif  // CAFFE_TEST_NPAIR_AGREEMENT_HPP_
