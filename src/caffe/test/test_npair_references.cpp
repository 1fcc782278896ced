// NPairMultiClassLoss with reference bottoms (bottom[2], bottom[3]): every
// query's candidates are the other batch samples and every reference.

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"

#include "caffe/blob.hpp"
#include "caffe/common.hpp"
#include "caffe/layers/npair_multiclass_loss_layer.hpp"
#include "caffe/util/math_functions.hpp"
#include "caffe/util/npair_cpu_threads.hpp"

#include "caffe/test/npair_reference.hpp"
#include "caffe/test/test_caffe_main.hpp"
#include "caffe/test/test_gradient_check_util.hpp"

namespace caffe {

namespace {

using npair_test::AllMinings;
using npair_test::ExpectMatches;
using npair_test::kNaN;
using npair_test::LayerWith;
using npair_test::Mining;
using npair_test::MiningSlack;
using npair_test::NPairExpected;
using npair_test::NPairReference;
typedef NPairLossParameter P;

// Backward's propagate_down: the features and the references.
vector<bool> FeaturesAndReferences() {
  vector<bool> down(4, false);
  down[0] = down[2] = true;
  return down;
}

// Quarters from -1 to 1: every product and sum of a few is exact in float,
// so the layer sees the reference's similarities bit for bit, ties and all.
vector<double> GridRows(const int rows, const int dim) {
  vector<double> x(rows * dim);
  for (int i = 0; i < x.size(); ++i) {
    x[i] = (static_cast<int>(caffe_rng_rand() % 9) - 4) / 4.;
  }
  return x;
}

}  // namespace

template <typename TypeParam>
class NPairReferencesTest : public MultiDeviceTest<TypeParam> {
  typedef typename TypeParam::Dtype Dtype;

 protected:
  NPairReferencesTest() {
    Caffe::set_random_seed(1701);
    Blob<Dtype>* blobs[] = {&features_, &labels_, &refs_, &ref_labels_};
    bottom_.assign(blobs, blobs + 4);
    for (int i = 0; i < 5; ++i) { tops_.push_back(new Blob<Dtype>()); }
  }
  virtual ~NPairReferencesTest() {
    for (int i = 0; i < tops_.size(); ++i) { delete tops_[i]; }
  }

  static void Fill(const vector<double>& v, const vector<int>& shape,
                   Blob<Dtype>* blob) {
    blob->Reshape(shape);
    // (An empty blob has no memory to write to.)
    if (!v.empty()) { std::copy(v.begin(), v.end(), blob->mutable_cpu_data()); }
  }
  // x (N x dim) and y (N) the batch, r (M x dim) and z (M) the references.
  void SetBatch(const vector<double>& x, const vector<double>& y,
                const vector<double>& r, const vector<double>& z) {
    const int dim = x.size() / y.size();
    vector<int> rows(2, y.size());
    rows[1] = dim;
    Fill(x, rows, &features_);
    Fill(y, vector<int>(1, y.size()), &labels_);
    rows[0] = z.size();
    Fill(r, rows, &refs_);
    Fill(z, vector<int>(1, z.size()), &ref_labels_);
  }
  vector<double> Values(const Blob<Dtype>& blob) const {
    return vector<double>(blob.cpu_data(), blob.cpu_data() + blob.count());
  }
  vector<Blob<Dtype>*> Tops(int num_tops) const {
    return vector<Blob<Dtype>*>(tops_.begin(), tops_.begin() + num_tops);
  }

  // Forward, then Backward into the features and the references with loss
  // weight 1 on the loss, on num_tops tops; the diffs are filled with garbage
  // first, to see them overwritten.
  void Run(const LayerParameter& param, const int num_tops,
           const vector<Blob<Dtype>*>& bottom) {
    NPairMultiClassLossLayer<Dtype> layer(param);
    const vector<Blob<Dtype>*> top = Tops(num_tops);
    layer.SetUp(bottom, top);
    layer.Forward(bottom, top);
    for (int b = 0; b < bottom.size(); b += 2) {
      if (bottom[b]->count() > 0) {
        caffe_set(bottom[b]->count(), Dtype(7), bottom[b]->mutable_cpu_diff());
      }
    }
    vector<bool> down = FeaturesAndReferences();
    down.resize(bottom.size());
    layer.Backward(top, down, bottom);
  }

  // Every top and both gradients against the reference, within the
  // tolerances of docs/layer_contract.md §5.
  void ExpectMatchesReference(const NPairLossParameter& p) {
    SCOPED_TRACE(p.ShortDebugString());
    LayerParameter param;
    param.mutable_npair_loss_param()->CopyFrom(p);
    Run(param, 5, bottom_);
    const NPairExpected expected = NPairReference(Values(features_),
        Values(labels_), Values(refs_), Values(ref_labels_),
        features_.count(1), p);
    ExpectMatches(expected, tops_, features_, &refs_);
  }

  // Grid features for labels y and references for labels z; every mining
  // with a few SNs and margins against the reference.
  void ExpectGridMatchesReference(const vector<double>& y,
                                  const vector<double>& z, const int dim) {
    SetBatch(GridRows(y.size(), dim), y, GridRows(z.size(), dim), z);
    const float sn[][2] = {{1, 2}, {-0.3f, -0.6f}, {0, 0}, {1e30f, -1e30f}};
    // Margins on the quarter grid tie exactly with similarities; the others
    // check that the float32 margin is what is compared.
    const float margins[][2] = {{0, 0}, {0.25f, -0.25f}, {0.1f, -0.05f}};
    const vector<NPairLossParameter> minings = AllMinings();
    for (int m = 0; m < minings.size(); ++m) {
      for (int s = 0; s < 4; ++s) {
        for (int g = 0; g < 3; ++g) {
          NPairLossParameter p = minings[m];
          p.set_identsn(sn[s][0]);
          p.set_diffsn(sn[s][1]);
          p.set_margin_ident(margins[g][0]);
          p.set_margin_diff(margins[g][1]);
          ExpectMatchesReference(p);
        }
      }
    }
  }

  Blob<Dtype> features_, labels_, refs_, ref_labels_;
  vector<Blob<Dtype>*> bottom_;
  vector<Blob<Dtype>*> tops_;
};

TYPED_TEST_CASE(NPairReferencesTest, TestDtypesAndDevices);

TYPED_TEST(NPairReferencesTest, TestNoReferencesIsTheTwoBottomLayer) {
  typedef typename TypeParam::Dtype Dtype;
  const double y[] = {0, 1, 0, 2, 1, kNaN, 2, 3, 0};
  vector<double> x(9 * 4);
  caffe_rng_gaussian<double>(x.size(), 0, 1, x.data());
  this->SetBatch(x, vector<double>(y, y + 9), vector<double>(),
                 vector<double>());
  const vector<Blob<Dtype>*> two(this->bottom_.begin(),
                                 this->bottom_.begin() + 2);
  const vector<NPairLossParameter> minings = AllMinings();
  for (int m = 0; m < minings.size(); ++m) {
    SCOPED_TRACE(minings[m].ShortDebugString());
    LayerParameter param;
    param.mutable_npair_loss_param()->CopyFrom(minings[m]);
    param.mutable_npair_loss_param()->set_identsn(-0.4f);
    param.mutable_npair_loss_param()->set_diffsn(1);
    vector<Dtype> outputs[2];
    for (int with_refs = 0; with_refs < 2; ++with_refs) {
      this->Run(param, 5, with_refs ? this->bottom_ : two);
      outputs[with_refs].assign(this->features_.cpu_diff(),
          this->features_.cpu_diff() + this->features_.count());
      for (int k = 0; k < 5; ++k) {
        outputs[with_refs].push_back(this->tops_[k]->cpu_data()[0]);
      }
    }
    EXPECT_EQ(0, std::memcmp(outputs[0].data(), outputs[1].data(),
                             outputs[0].size() * sizeof(Dtype)));
  }
}

TYPED_TEST(NPairReferencesTest, TestFewerReferencesThanQueries) {
  const double y[] = {0, 0, 1, 1, 2, 3, 3, 4};
  const double z[] = {1, 4, 5};
  this->ExpectGridMatchesReference(vector<double>(y, y + 8),
                                   vector<double>(z, z + 3), 3);
}

TYPED_TEST(NPairReferencesTest, TestMoreReferencesThanQueries) {
  const double y[] = {0, 1, 2, 2};
  const double z[] = {0, 0, 1, 3, 3, 2, 4, 1, 5, 0, 2};
  this->ExpectGridMatchesReference(vector<double>(y, y + 4),
                                   vector<double>(z, z + 11), 2);
}

TYPED_TEST(NPairReferencesTest, TestReferencesOnlyPositives) {
  // The batch has no positive pair: every positive is a reference.
  const double y[] = {0, 1, 2, 3, 4};
  const double z[] = {0, 1, 1, 3, 0, 4};
  this->ExpectGridMatchesReference(vector<double>(y, y + 5),
                                   vector<double>(z, z + 6), 3);
}

TYPED_TEST(NPairReferencesTest, TestReferencesOnlyNegatives) {
  const double y[] = {0, 0, 1, 1, 1, 2};
  const double z[] = {7, 8, 8, 9};
  this->ExpectGridMatchesReference(vector<double>(y, y + 6),
                                   vector<double>(z, z + 4), 2);
}

TYPED_TEST(NPairReferencesTest, TestNaNLabelsAmongReferences) {
  // A NaN-labelled reference is every query's negative, and no NaN-labelled
  // query has a positive, not even a NaN-labelled reference.
  const double y[] = {0, kNaN, 0, 1, 2, 1};
  const double z[] = {kNaN, 1, kNaN, 2, 0};
  this->ExpectGridMatchesReference(vector<double>(y, y + 6),
                                   vector<double>(z, z + 5), 3);
}

TYPED_TEST(NPairReferencesTest, TestSingleQuery) {
  // N = 1: the references are the only candidates.
  const double y[] = {3};
  const double z[] = {3, 1, 3, 2};
  this->ExpectGridMatchesReference(vector<double>(y, y + 1),
                                   vector<double>(z, z + 4), 3);
}

TYPED_TEST(NPairReferencesTest, TestNonFiniteReferenceGivesNaNLoss) {
  const double y[] = {0, 0, 1, 1};
  const double z[] = {2, 0};
  vector<double> r = GridRows(2, 2);
  r[3] = std::numeric_limits<double>::infinity();
  this->SetBatch(GridRows(4, 2), vector<double>(y, y + 4), r,
                 vector<double>(z, z + 2));
  const vector<NPairLossParameter> minings = AllMinings();
  for (int m = 0; m < minings.size(); ++m) {
    SCOPED_TRACE(minings[m].ShortDebugString());
    LayerParameter param;
    param.mutable_npair_loss_param()->CopyFrom(minings[m]);
    this->Run(param, 1, this->bottom_);
    EXPECT_TRUE(std::isnan(this->tops_[0]->cpu_data()[0]));
    bool nan_grad = false;
    for (int i = 0; i < this->features_.count(); ++i) {
      nan_grad |= std::isnan(static_cast<double>(
          this->features_.cpu_diff()[i]));
    }
    EXPECT_TRUE(nan_grad);
  }
}

TYPED_TEST(NPairReferencesTest, TestGradient) {
  typedef typename TypeParam::Dtype Dtype;
  const int num = 5, refs = 4, dim = 3;
  const double y[num] = {0, 0, 1, 2, 1};
  const double z[refs] = {2, 0, 3, 1};
  const float margin_ident = 0.1f, margin_diff = -0.15f;
  const Dtype step = 1e-3;
  // The loss is piecewise smooth: mining switches pairs on and off. Draw
  // features until no comparison mining makes is within twice the reach of
  // a checker step (see MiningSlack), so selection stays put while checking.
  vector<double> margins(3, 0);
  margins[1] = margin_ident;
  margins[2] = margin_diff;
  vector<double> x(num * dim), r(refs * dim);
  for (int draw = 0; ; ++draw) {
    ASSERT_LT(draw, 1000) << "no batch with enough slack";
    caffe_rng_gaussian<double>(x.size(), 0, 1, x.data());
    caffe_rng_gaussian<double>(r.size(), 0, 1, r.data());
    double largest = 0;
    for (int i = 0; i < x.size(); ++i) {
      largest = std::max(largest, std::fabs(x[i]) + step);
    }
    for (int i = 0; i < r.size(); ++i) {
      largest = std::max(largest, std::fabs(r[i]) + step);
    }
    if (MiningSlack(x, r, dim, margins) > 4 * step * largest) { break; }
  }
  this->SetBatch(x, vector<double>(y, y + num), r,
                 vector<double>(z, z + refs));
  const vector<NPairLossParameter> minings = AllMinings();
  for (int m = 0; m < minings.size(); ++m) {
    SCOPED_TRACE(minings[m].ShortDebugString());
    const LayerParameter param =
        LayerWith(minings[m], margin_ident, margin_diff, 1, -0.5);
    for (int b = 0; b < 4; b += 2) {  // the features, then the references
      SCOPED_TRACE(b);
      NPairMultiClassLossLayer<Dtype> layer(param);
      GradientChecker<Dtype> checker(step, 1e-3, 1701);
      checker.CheckGradientExhaustive(&layer, this->bottom_, this->Tops(1), b);
    }
  }
}

TYPED_TEST(NPairReferencesTest, TestSameResultsForAnyThreadCount) {
  typedef typename TypeParam::Dtype Dtype;
  // Enough queries for every pass to split its rows (kMinParallelRows), of
  // sizes no block divides; a few samples a label, scattered, and some NaN
  // labels: the batch alone, then with more references than queries.
  // OpenBLAS keeps its own threads: only the layer's change.
  const int nums[] = {203, 149}, refs[] = {0, 211}, dim = 5;
  for (int c = 0; c < 2; ++c) {
    SCOPED_TRACE(refs[c]);
    const int num = nums[c];
    ASSERT_GE(num, npair_cpu::kMinParallelRows);
    vector<double> x(num * dim), y(num), r(refs[c] * dim), z(refs[c]);
    caffe_rng_gaussian<double>(x.size(), 0, 1, x.data());
    if (!r.empty()) { caffe_rng_gaussian<double>(r.size(), 0, 1, r.data()); }
    for (int i = 0; i < num; ++i) { y[i] = (i % 29 == 0) ? kNaN : (i * 7) % 67; }
    for (int i = 0; i < z.size(); ++i) {
      z[i] = (i % 31 == 0) ? kNaN : (i * 5) % 71;
    }
    this->SetBatch(x, y, r, z);
    const vector<Blob<Dtype>*> bottom(this->bottom_.begin(),
        this->bottom_.begin() + (refs[c] ? 4 : 2));
    const int threads[] = {1, 2, 4};
    const int saved_threads = omp_get_max_threads();
    const vector<NPairLossParameter> minings = AllMinings();
    for (int m = 0; m < minings.size(); ++m) {
      SCOPED_TRACE(minings[m].ShortDebugString());
      const LayerParameter param =
          LayerWith(minings[m], 0.05f, -0.1f, -0.3f, 2);
      vector<Dtype> first;
      for (int t = 0; t < 3; ++t) {
        omp_set_num_threads(threads[t]);
        this->Run(param, 5, bottom);
        vector<Dtype> outputs(this->features_.cpu_diff(),
            this->features_.cpu_diff() + this->features_.count());
        if (refs[c]) {
          outputs.insert(outputs.end(), this->refs_.cpu_diff(),
                         this->refs_.cpu_diff() + this->refs_.count());
        }
        for (int k = 0; k < 5; ++k) {
          outputs.push_back(this->tops_[k]->cpu_data()[0]);
        }
        if (t == 0) {
          first = outputs;
          continue;
        }
        EXPECT_EQ(0, std::memcmp(outputs.data(), first.data(),
                                 first.size() * sizeof(Dtype)))
            << threads[t] << " threads";
      }
    }
    omp_set_num_threads(saved_threads);
  }
}

template <typename Dtype>
class NPairReferencesDeathTest : public ::testing::Test {
 protected:
  NPairReferencesDeathTest() {
    features_.Reshape(4, 3, 1, 1);
    labels_.Reshape(vector<int>(1, 4));
    refs_.Reshape(5, 3, 1, 1);
    ref_labels_.Reshape(vector<int>(1, 5));
    Blob<Dtype>* blobs[] = {&features_, &labels_, &refs_, &ref_labels_};
    bottom_.assign(blobs, blobs + 4);
    top_.push_back(&loss_);
  }
  Blob<Dtype> features_, labels_, refs_, ref_labels_, loss_;
  vector<Blob<Dtype>*> bottom_, top_;
};

TYPED_TEST_CASE(NPairReferencesDeathTest, TestDtypes);

TYPED_TEST(NPairReferencesDeathTest, TestReferenceDimension) {
  NPairMultiClassLossLayer<TypeParam> layer((LayerParameter()));
  this->refs_.Reshape(5, 2, 1, 1);
  EXPECT_DEATH(layer.SetUp(this->bottom_, this->top_),
               "NPairMultiClassLoss Layer: bottom\\[2\\] \\(the references\\) "
               "must hold M >= 0 rows of the features' D = 3 values; got "
               "shape 5 2 1 1");
}

TYPED_TEST(NPairReferencesDeathTest, TestReferenceLabelCount) {
  NPairMultiClassLossLayer<TypeParam> layer((LayerParameter()));
  this->ref_labels_.Reshape(vector<int>(1, 4));
  EXPECT_DEATH(layer.SetUp(this->bottom_, this->top_),
               "NPairMultiClassLoss Layer: bottom\\[3\\] must hold exactly one "
               "label per reference, with M = 5 as its first axis; got shape 4");
}

TYPED_TEST(NPairReferencesDeathTest, TestReferencesWithoutLabels) {
  NPairMultiClassLossLayer<TypeParam> layer((LayerParameter()));
  this->bottom_.pop_back();
  EXPECT_DEATH(layer.SetUp(this->bottom_, this->top_),
               "NPairMultiClassLoss Layer: references come as two bottoms");
}

TYPED_TEST(NPairReferencesDeathTest, TestNoGradientToReferenceLabels) {
  // Asked (as a CrossBatchMemory's labels are), the reference labels keep
  // their diff; the batch's labels still may not be asked for.
  NPairMultiClassLossLayer<TypeParam> layer((LayerParameter()));
  EXPECT_FALSE(layer.AllowForceBackward(3));
  layer.SetUp(this->bottom_, this->top_);
  layer.Forward(this->bottom_, this->top_);
  caffe_set(5, TypeParam(7), this->ref_labels_.mutable_cpu_diff());
  vector<bool> down(4, false);
  down[3] = true;
  layer.Backward(this->top_, down, this->bottom_);
  for (int i = 0; i < 5; ++i) { EXPECT_EQ(7, this->ref_labels_.cpu_diff()[i]); }
  down[1] = true;
  EXPECT_DEATH(layer.Backward(this->top_, down, this->bottom_),
               "NPairMultiClassLoss Layer cannot backpropagate to label "
               "inputs \\(bottom\\[1\\]\\)");
}

}  // namespace caffe
