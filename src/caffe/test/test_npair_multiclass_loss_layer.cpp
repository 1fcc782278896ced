#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"

#include "caffe/blob.hpp"
#include "caffe/common.hpp"
#include "caffe/layers/npair_multiclass_loss_layer.hpp"
#include "caffe/net.hpp"
#include "caffe/util/math_functions.hpp"
#include "caffe/util/npair_miner.hpp"
#include "caffe/util/npair_mining_rules.hpp"

#include "caffe/test/test_caffe_main.hpp"
#include "caffe/test/test_gradient_check_util.hpp"
#include "caffe/test/npair_reference.hpp"

namespace caffe {

namespace {

using npair_test::AllMinings;
using npair_test::ExpectMatches;
using npair_test::kInf;
using npair_test::kNaN;
using npair_test::LayerWith;
using npair_test::Mining;
using npair_test::MiningSlack;
using npair_test::NPairExpected;
using npair_test::NPairReference;
typedef NPairLossParameter P;  // For the enum names.

// Backward's propagate_down: the features, never the labels.
vector<bool> FeaturesOnly() {
  vector<bool> down(2, false);
  down[0] = true;
  return down;
}

// The worked example of docs/layer_contract.md §9: four unit rows, labels
// 0, 0, 1, 1.
const double kExampleX[] = {1, 0, 0.6, 0.8, 0, 1, -0.6, 0.8};
const double kExampleY[] = {0, 0, 1, 1};

}  // namespace

TEST(NPairSelectionTest, TestRelativePosition) {
  EXPECT_EQ(9, NPairRelativePosition(10, 0.f));
  EXPECT_EQ(9, NPairRelativePosition(10, -0.f));  // -0.0 counts as >= 0.
  EXPECT_EQ(7, NPairRelativePosition(10, 2.f));
  EXPECT_EQ(7, NPairRelativePosition(10, 2.7f));  // floor
  EXPECT_EQ(0, NPairRelativePosition(10, 100.f));
  EXPECT_EQ(6, NPairRelativePosition(10, -0.25f));  // trunc(6.5)
  // float32 -0.3 is -0.300000012: 9 - 3.00000012 truncates to 5, not 6.
  EXPECT_EQ(5, NPairRelativePosition(10, -0.3f));
  EXPECT_EQ(0, NPairRelativePosition(10, -1.f));
  EXPECT_EQ(0, NPairRelativePosition(10, 1e30f));
  EXPECT_EQ(0, NPairRelativePosition(10, -1e30f));
  EXPECT_EQ(0, NPairRelativePosition(1, 0.f));
  EXPECT_EQ(0, NPairRelativePosition(1, -0.5f));
}

TEST(NPairSelectionTest, TestKeepWithEmptyLists) {
  // No negative: positives' threshold -inf; no positive: negatives' +inf.
  EXPECT_FALSE(NPairKeepPositive(P::HARD, 1, -kInf, 0.5));
  EXPECT_TRUE(NPairKeepPositive(P::EASY, 1, -kInf, 0.5));
  EXPECT_FALSE(NPairKeepNegative(P::HARD, 1, kInf, -0.5));
  EXPECT_TRUE(NPairKeepNegative(P::EASY, 1, kInf, -0.5));
  EXPECT_TRUE(NPairKeepPositive(P::RAND, 1, 0, 0));
  EXPECT_TRUE(NPairKeepNegative(P::RAND, 1, 0, 0));
  // The relative methods keep the threshold's own pair.
  EXPECT_TRUE(NPairKeepPositive(P::RELATIVE_HARD, 0.5, 0.5, 0));
  EXPECT_TRUE(NPairKeepNegative(P::RELATIVE_HARD, 0.5, 0.5, 0));
  EXPECT_TRUE(NPairKeepPositive(P::RELATIVE_EASY, 0.5, 0.5, 0));
  EXPECT_TRUE(NPairKeepNegative(P::RELATIVE_EASY, 0.5, 0.5, 0));
}

// The CPU path compares S with t + m through an interval of Dtype values
// (NPairKeptRange); at the Dtype neighbours of t + m it must decide as the
// rule in double does, including where t + m falls between two Dtypes.
template <typename Dtype>
class NPairKeptRangeTest : public ::testing::Test {};

TYPED_TEST_CASE(NPairKeptRangeTest, TestDtypes);

TYPED_TEST(NPairKeptRangeTest, TestAgreesWithRuleAtTheBound) {
  typedef TypeParam Dtype;
  const bool is_float = sizeof(Dtype) == 4;
  // (t, m): t + m exactly a float (0.25 + 0.25), between two floats (the
  // others, in float), and for double a sum that rounds (0.1 + 0.2f).
  const double t_values[] = {0.25, 0.3, 1, -0.7, 0.1, 1e4};
  const float m_values[] = {0.25f, 0.1f, 1e-9f, -0.05f, 0.2f, 0.3f};
  const P::MiningMethod methods[] =
      {P::HARD, P::EASY, P::RELATIVE_HARD, P::RELATIVE_EASY};
  const Dtype inf = std::numeric_limits<Dtype>::infinity();
  for (int c = 0; c < 6; ++c) {
    const Dtype t = static_cast<Dtype>(t_values[c]);
    const float m = m_values[c];
    const double bound = static_cast<double>(t) + m;
    SCOPED_TRACE(bound);
    if (is_float && c > 0) {
      ASSERT_NE(bound, static_cast<double>(static_cast<Dtype>(bound)));
    }
    // Five consecutive Dtypes around the bound, which lies within them.
    vector<Dtype> s(1, static_cast<Dtype>(bound));
    for (int k = 0; k < 2; ++k) {
      s.insert(s.begin(), std::nextafter(s.front(), -inf));
      s.push_back(std::nextafter(s.back(), inf));
    }
    ASSERT_LT(s.front(), bound);
    ASSERT_GT(s.back(), bound);
    for (int positive = 0; positive < 2; ++positive) {
      for (int r = 0; r < 4; ++r) {
        SCOPED_TRACE(methods[r]);
        SCOPED_TRACE(positive);
        Dtype lo, hi;
        NPairKeptRange(positive, methods[r], t, m, &lo, &hi);
        for (int k = 0; k < s.size(); ++k) {
          const bool rule = positive ?
              NPairKeepPositive(methods[r], s[k], t, m) :
              NPairKeepNegative(methods[r], s[k], t, m);
          EXPECT_EQ(rule, lo <= s[k] && s[k] <= hi) << s[k];
        }
      }
    }
    Dtype lo, hi;
    NPairKeptRange(true, P::RAND, t, m, &lo, &hi);
    EXPECT_EQ(-inf, lo);
    EXPECT_EQ(inf, hi);
  }
}

template <typename TypeParam>
class NPairMultiClassLossLayerTest : public MultiDeviceTest<TypeParam> {
  typedef typename TypeParam::Dtype Dtype;

 protected:
  NPairMultiClassLossLayerTest() {
    Caffe::set_random_seed(1701);
    bottom_.push_back(&features_);
    bottom_.push_back(&labels_);
    for (int i = 0; i < 5; ++i) { tops_.push_back(new Blob<Dtype>()); }
  }
  virtual ~NPairMultiClassLossLayerTest() {
    for (int i = 0; i < tops_.size(); ++i) { delete tops_[i]; }
  }

  void SetBatch(const vector<double>& x, const vector<double>& y) {
    const int num = y.size();
    features_.Reshape(num, x.size() / num, 1, 1);
    labels_.Reshape(vector<int>(1, num));
    std::copy(x.begin(), x.end(), features_.mutable_cpu_data());
    std::copy(y.begin(), y.end(), labels_.mutable_cpu_data());
  }
  void SetWorkedExample() {
    SetBatch(vector<double>(kExampleX, kExampleX + 8),
             vector<double>(kExampleY, kExampleY + 4));
  }
  // Features on a grid of quarters: every product and sum is exact in float,
  // so the layer sees the reference's similarities bit for bit, ties and all.
  void SetGridBatch(const vector<double>& y, int dim) {
    vector<double> x(y.size() * dim);
    for (int i = 0; i < x.size(); ++i) {
      x[i] = (static_cast<int>(caffe_rng_rand() % 9) - 4) / 4.;
    }
    SetBatch(x, y);
  }
  vector<double> Features() const {
    return vector<double>(features_.cpu_data(),
                          features_.cpu_data() + features_.count());
  }
  vector<double> Labels() const {
    return vector<double>(labels_.cpu_data(),
                          labels_.cpu_data() + labels_.count());
  }
  vector<Blob<Dtype>*> Tops(int num_tops) const {
    return vector<Blob<Dtype>*>(tops_.begin(), tops_.begin() + num_tops);
  }

  // Forward, then Backward with loss weight 1 on the loss, on num_tops tops;
  // the features' diff is filled with garbage first, to see it overwritten.
  void Run(const LayerParameter& param, int num_tops) {
    NPairMultiClassLossLayer<Dtype> layer(param);
    const vector<Blob<Dtype>*> top = Tops(num_tops);
    layer.SetUp(bottom_, top);
    layer.Forward(bottom_, top);
    caffe_set(features_.count(), Dtype(7), features_.mutable_cpu_diff());
    layer.Backward(top, FeaturesOnly(), bottom_);
  }

  // Compares all five tops and the gradient with the reference, within the
  // tolerances of docs/layer_contract.md §5.
  void ExpectMatchesReference(const NPairLossParameter& p) {
    SCOPED_TRACE(p.ShortDebugString());
    LayerParameter param;
    param.mutable_npair_loss_param()->CopyFrom(p);
    Run(param, 5);
    const NPairExpected expected = NPairReference(Features(), Labels(),
        features_.count(1), p);
    ExpectMatches<Dtype>(expected, tops_, features_, NULL);
  }

  // Loss, gradient and R@K on the current batch for every mining: all zero
  // with no positive pair; zero, zero and one with no negative pair.
  void ExpectNothingToLearn(double recall) {
    const vector<NPairLossParameter> minings = AllMinings();
    for (int m = 0; m < minings.size(); ++m) {
      SCOPED_TRACE(minings[m].ShortDebugString());
      LayerParameter param;
      param.mutable_npair_loss_param()->CopyFrom(minings[m]);
      Run(param, 5);
      EXPECT_EQ(0, tops_[0]->cpu_data()[0]);
      for (int k = 1; k <= 3; ++k) {
        EXPECT_EQ(recall, tops_[k]->cpu_data()[0]);
      }
      for (int i = 0; i < features_.count(); ++i) {
        EXPECT_EQ(0, features_.cpu_diff()[i]);
      }
    }
  }

  Blob<Dtype> features_;
  Blob<Dtype> labels_;
  vector<Blob<Dtype>*> bottom_;
  vector<Blob<Dtype>*> tops_;
};

TYPED_TEST_CASE(NPairMultiClassLossLayerTest, TestDtypesAndDevices);

TYPED_TEST(NPairMultiClassLossLayerTest, TestWorkedExample) {
  this->SetWorkedExample();
  this->Run(LayerParameter(), 5);
  EXPECT_NEAR(0.8005876, this->tops_[0]->cpu_data()[0], 1e-6);
  EXPECT_EQ(0.5, this->tops_[1]->cpu_data()[0]);
  EXPECT_EQ(1, this->tops_[2]->cpu_data()[0]);
  EXPECT_EQ(1, this->tops_[3]->cpu_data()[0]);
  EXPECT_NEAR(1.2, this->tops_[4]->cpu_data()[0], 1e-6);
}

TYPED_TEST(NPairMultiClassLossLayerTest, TestWorkedExampleLocalHard) {
  // S_ab = 0.6, S_ac = 0, S_ad = -0.6, S_bc = 0.8, S_bd = 0.28, S_cd = 0.8.
  // Only query b keeps a positive (a: 0.6 < its hardest negative, c: 0.8)
  // and a negative (c: 0.8 > its easiest positive, a: 0.6), so the loss is
  // (log(e^0.6 + e^0.8) - 0.6) / 4 = log(1 + e^0.2) / 4.
  this->SetWorkedExample();
  LayerParameter param;
  param.mutable_npair_loss_param()->CopyFrom(
      Mining(P::LOCAL, P::HARD, P::LOCAL, P::HARD));
  this->Run(param, 1);
  EXPECT_NEAR(std::log(1 + std::exp(0.2)) / 4,
              this->tops_[0]->cpu_data()[0], 1e-6);
}

TYPED_TEST(NPairMultiClassLossLayerTest, TestTopsInOrder) {
  typedef typename TypeParam::Dtype Dtype;
  const double loss = 0.8005876, asum = 1.2, recall[] = {0.5, 1, 1};
  for (int num_tops = 1; num_tops <= 5; ++num_tops) {
    SCOPED_TRACE(num_tops);
    this->SetWorkedExample();
    NPairMultiClassLossLayer<Dtype> layer((LayerParameter()));
    const vector<Blob<Dtype>*> top = this->Tops(num_tops);
    layer.SetUp(this->bottom_, top);
    // With no loss_weight, the loss weighs 1 and every monitor 0.
    const Dtype weighted = layer.Forward(this->bottom_, top);
    EXPECT_NEAR(loss, weighted, 1e-6);
    EXPECT_EQ(1, layer.loss(0));
    EXPECT_NEAR(loss, top[0]->cpu_data()[0], 1e-6);
    for (int i = 1; i < num_tops; ++i) {
      EXPECT_EQ(0, top[i]->num_axes());
      EXPECT_EQ(0, layer.loss(i));
      const double expected = (i == num_tops - 1) ? asum : recall[i - 1];
      EXPECT_NEAR(expected, top[i]->cpu_data()[0], 1e-6) << "top " << i;
    }
  }
}

TYPED_TEST(NPairMultiClassLossLayerTest, TestMonitorWeightsLeaveGradient) {
  typedef typename TypeParam::Dtype Dtype;
  this->SetWorkedExample();
  LayerParameter param;
  for (int i = 0; i < 5; ++i) { param.add_loss_weight(1); }
  NPairMultiClassLossLayer<Dtype> layer(param);
  const vector<Blob<Dtype>*> top = this->Tops(5);
  layer.SetUp(this->bottom_, top);
  for (int i = 0; i < 5; ++i) { EXPECT_EQ(1, layer.loss(i)); }
  layer.Forward(this->bottom_, top);
  layer.Backward(top, FeaturesOnly(), this->bottom_);
  const vector<double> with_monitors(this->features_.cpu_diff(),
      this->features_.cpu_diff() + this->features_.count());
  for (int i = 1; i < 5; ++i) { top[i]->mutable_cpu_diff()[0] = 0; }
  layer.Backward(top, FeaturesOnly(), this->bottom_);
  for (int i = 0; i < this->features_.count(); ++i) {
    EXPECT_EQ(with_monitors[i], this->features_.cpu_diff()[i]);
  }
}

TYPED_TEST(NPairMultiClassLossLayerTest, TestMatchesReference) {
  typedef typename TypeParam::Dtype Dtype;
  const float sn[][2] = {{2, 1}, {-0.3f, -0.6f}, {0, 0}, {-0.f, -0.f},
      {1e30f, -1e30f}, {-1e30f, 1e30f}, {-1, 3.7f}};
  // Margins on the quarter grid tie exactly with similarities; the others
  // check that the float32 margin is what is compared.
  const float margins[][2] = {{0, 0}, {0.25f, -0.25f}, {0.1f, -0.05f}};
  // The third batch has NaN labels: samples without a positive that are
  // everyone's negative but their own. Their rows are made twice as long, so
  // that their S_ii would top the negatives' lists if a pass let j == i in.
  const double batches[][10] = {{0, 0, 0, 1, 1, 1, 2, 2, 3, 4},
                                {5, 5, 5, 5, 7, 7, 7},
                                {0, kNaN, 0, 1, kNaN, 1, 1, kNaN}};
  const int sizes[] = {10, 7, 8}, dims[] = {3, 2, 2};
  const vector<NPairLossParameter> minings = AllMinings();
  for (int b = 0; b < 3; ++b) {
    this->SetGridBatch(vector<double>(batches[b], batches[b] + sizes[b]),
                       dims[b]);
    for (int i = 0; i < sizes[b]; ++i) {
      if (std::isnan(batches[b][i])) {
        caffe_scal(dims[b], Dtype(2),
                   this->features_.mutable_cpu_data() + i * dims[b]);
      }
    }
    for (int m = 0; m < minings.size(); ++m) {
      for (int s = 0; s < sizeof(sn) / sizeof(sn[0]); ++s) {
        for (int g = 0; g < sizeof(margins) / sizeof(margins[0]); ++g) {
          NPairLossParameter p = minings[m];
          p.set_identsn(sn[s][0]);
          p.set_diffsn(sn[s][1]);
          p.set_margin_ident(margins[g][0]);
          p.set_margin_diff(margins[g][1]);
          this->ExpectMatchesReference(p);
        }
      }
    }
  }
}

TYPED_TEST(NPairMultiClassLossLayerTest, TestGradient) {
  typedef typename TypeParam::Dtype Dtype;
  const int num = 6, dim = 3;
  const double y[num] = {0, 0, 0, 1, 1, 2};
  const float margin_ident = 0.1f, margin_diff = -0.15f;
  const Dtype step = 1e-3;
  // The loss is piecewise smooth: mining switches pairs on and off. Draw
  // features until no comparison mining makes is within twice the reach of
  // a checker step (see MiningSlack), so selection stays put while checking.
  vector<double> margins(3, 0);
  margins[1] = margin_ident;
  margins[2] = margin_diff;
  vector<double> x(num * dim);
  for (int draw = 0; ; ++draw) {
    ASSERT_LT(draw, 1000) << "no batch with enough slack";
    caffe_rng_gaussian<double>(x.size(), 0, 1, x.data());
    double largest = 0;
    for (int i = 0; i < x.size(); ++i) {
      largest = std::max(largest, std::fabs(x[i]) + step);
    }
    if (MiningSlack(x, vector<double>(), dim, margins) > 4 * step * largest) { break; }
  }
  this->SetBatch(x, vector<double>(y, y + num));
  const vector<NPairLossParameter> minings = AllMinings();
  for (int m = 0; m < minings.size(); ++m) {
    SCOPED_TRACE(minings[m].ShortDebugString());
    const LayerParameter param =
        LayerWith(minings[m], margin_ident, margin_diff, 1, -0.5);
    NPairMultiClassLossLayer<Dtype> layer(param);
    GradientChecker<Dtype> checker(step, 1e-3, 1701);
    checker.CheckGradientExhaustive(&layer, this->bottom_, this->Tops(1), 0);
  }
}

TYPED_TEST(NPairMultiClassLossLayerTest, TestSingleSample) {
  const double x[] = {0.5, -2, 1};
  this->SetBatch(vector<double>(x, x + 3), vector<double>(1, 3));
  this->Run(LayerParameter(), 5);
  EXPECT_EQ(0, this->tops_[0]->cpu_data()[0]);
  for (int k = 1; k <= 3; ++k) { EXPECT_EQ(0, this->tops_[k]->cpu_data()[0]); }
  EXPECT_EQ(3.5, this->tops_[4]->cpu_data()[0]);
  for (int i = 0; i < 3; ++i) { EXPECT_EQ(0, this->features_.cpu_diff()[i]); }
}

TYPED_TEST(NPairMultiClassLossLayerTest, TestNoPositivePair) {
  const double y[] = {0, 1, 2, 3, 4};
  this->SetGridBatch(vector<double>(y, y + 5), 3);
  this->ExpectNothingToLearn(0);  // No query is eligible for R@K.
}

TYPED_TEST(NPairMultiClassLossLayerTest, TestNoNegativePair) {
  this->SetGridBatch(vector<double>(5, 2), 3);
  this->ExpectNothingToLearn(1);  // Nothing can outrank a positive.
}

TYPED_TEST(NPairMultiClassLossLayerTest, TestLargeScaleIsFinite) {
  // D = 1: S_01 = 600, S_02 = 930, S_12 = 620; exp overflows double above
  // 709. l_0 = log(e^600 + e^930) - 600 = 330 + log1p(e^-330),
  // l_1 = 20 + log1p(e^-20), l_2 = 0 (no positive). The softmax weights are
  // then 0 or 1 up to e^-20, so G + G^T = [0 -2 1; -2 0 1; 1 1 0] and the
  // gradient (G + G^T) x / 3 = (-9, -29, 50) / 3.
  const double x[] = {30, 20, 31}, y[] = {0, 0, 1};
  this->SetBatch(vector<double>(x, x + 3), vector<double>(y, y + 3));
  this->Run(LayerParameter(), 1);
  EXPECT_NEAR((350 + std::log1p(std::exp(-20.))) / 3,
              this->tops_[0]->cpu_data()[0], 1e-6 * 117);
  const double grad[] = {-9. / 3, -29. / 3, 50. / 3};
  for (int i = 0; i < 3; ++i) {
    EXPECT_NEAR(grad[i], this->features_.cpu_diff()[i], 1e-6 * 17);
  }
}

TYPED_TEST(NPairMultiClassLossLayerTest, TestNaNLabelIsNotItsOwnNegative) {
  // Two tight classes beside two NaN-labelled samples (D = 3, exact in
  // float). The NaN-labelled c1 is the most similar to itself (S = 2.25);
  // the most similar pair with different labels is (a_k, c2), S = 0.5; the
  // positive pairs have S = 1.
  const double x[] = {1, 0, 0,   1, 0.25, 0,      // a1, a2: label 0
                      0, 1, 0,   0, 1, 0.25,      // b1, b2: label 1
                      0, 0, 1.5, 0.5, 0, -1};     // c1, c2: NaN
  const double y[] = {0, 0, 1, 1, kNaN, kNaN};
  this->SetBatch(vector<double>(x, x + 18), vector<double>(y, y + 6));
  // GLOBAL HARD positives: t+ = 0.5, and no positive is below it.
  this->ExpectMatchesReference(
      Mining(P::GLOBAL, P::HARD, P::LOCAL, P::RAND));
  EXPECT_EQ(0, this->tops_[0]->cpu_data()[0]);
  for (int i = 0; i < 18; ++i) { EXPECT_EQ(0, this->features_.cpu_diff()[i]); }
  // GLOBAL RELATIVE_HARD negatives with diffsn 0: t- = 0.5 keeps (a1, c2)
  // and (a2, c2); a1 and a2 each lose log(e^1 + e^0.5) - 1, c2 has no
  // positive, b1 and b2 keep no negative: loss = 2 log(1 + e^-0.5) / 6.
  NPairLossParameter relative =
      Mining(P::LOCAL, P::RAND, P::GLOBAL, P::RELATIVE_HARD);
  relative.set_diffsn(0);
  this->ExpectMatchesReference(relative);
  EXPECT_NEAR(std::log1p(std::exp(-0.5)) / 3, this->tops_[0]->cpu_data()[0],
              1e-6);
}

TYPED_TEST(NPairMultiClassLossLayerTest, TestNaNFeatureWithRandMining) {
  // Every pair kept, and S_22 = NaN: the loss is NaN, not 0 over a NaN
  // gradient.
  const double x[] = {1, 1, kNaN}, y[] = {0, 0, 1};
  this->SetBatch(vector<double>(x, x + 3), vector<double>(y, y + 3));
  this->Run(LayerParameter(), 1);
  EXPECT_TRUE(std::isnan(this->tops_[0]->cpu_data()[0]));
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(std::isnan(this->features_.cpu_diff()[i])) << i;
  }
}

TYPED_TEST(NPairMultiClassLossLayerTest, TestNonFiniteFeaturesGiveNaNLoss) {
  // One NaN, +inf or -inf feature makes every row of S non-finite: the loss
  // and the whole gradient are NaN whatever the mining.
  const double y[] = {0, 0, 1, 1, 1, 2, 3, 3};
  const double bad[] = {kNaN, kInf, -kInf};
  const vector<NPairLossParameter> minings = AllMinings();
  for (int b = 0; b < 3; ++b) {
    this->SetGridBatch(vector<double>(y, y + 8), 3);
    this->features_.mutable_cpu_data()[3 * 5 + 1] = bad[b];
    for (int m = 0; m < minings.size(); ++m) {
      SCOPED_TRACE(minings[m].ShortDebugString());
      SCOPED_TRACE(bad[b]);
      NPairLossParameter p = minings[m];
      p.set_identsn(1);
      p.set_diffsn(-0.5);
      LayerParameter param;
      param.mutable_npair_loss_param()->CopyFrom(p);
      this->Run(param, 5);
      EXPECT_TRUE(std::isnan(this->tops_[0]->cpu_data()[0]));
      for (int i = 0; i < this->features_.count(); ++i) {
        EXPECT_TRUE(std::isnan(this->features_.cpu_diff()[i])) << i;
      }
    }
  }
}

TYPED_TEST(NPairMultiClassLossLayerTest, TestRecallEligibleByCount) {
  // D = 1, x = (inf, -1, 1), labels 0, 0, 1: S_01 = -inf is the only
  // positive similarity of queries 0 and 1, and each has one negative at
  // least as similar (S_02 = inf, S_12 = -1). Both have a positive, so both
  // count: R@1 = 0, R@5 = R@10 = 1. Query 2 has no positive.
  const double x[] = {kInf, -1, 1}, y[] = {0, 0, 1};
  this->SetBatch(vector<double>(x, x + 3), vector<double>(y, y + 3));
  this->Run(LayerParameter(), 5);
  EXPECT_TRUE(std::isnan(this->tops_[0]->cpu_data()[0]));
  EXPECT_EQ(0, this->tops_[1]->cpu_data()[0]);
  EXPECT_EQ(1, this->tops_[2]->cpu_data()[0]);
  EXPECT_EQ(1, this->tops_[3]->cpu_data()[0]);
}

TYPED_TEST(NPairMultiClassLossLayerTest, TestUsageBlock) {
  typedef typename TypeParam::Dtype Dtype;
  // The usage block (docs/usage_block.prototxt), verbatim, after an input layer.
  const string proto =
      "force_backward: true "
      "layer { name: 'data' type: 'Input' top: 'pool5/7x7_s1' "
      "  top: 'label_type_mb' "
      "  input_param { shape { dim: 8 dim: 5 dim: 1 dim: 1 } "
      "                shape { dim: 8 } } } "
      "\n"
      "layer {\n"
      "    bottom: \"pool5/7x7_s1\"\n"
      "    name: \"loss3/pool5/7x7_s1/norm\"\n"
      "    type: \"L2Normalize\"\n"
      "    top: \"loss3/pool5/7x7_s1/norm\"\n"
      "}\n"
      "layer {\n"
      "    bottom: \"loss3/pool5/7x7_s1/norm\"\n"
      "    #bottom: \"pool5/7x7_s1\"\n"
      "    bottom: \"label_type_mb\"\n"
      "    name: \"loss3/type_mb\"\n"
      "    type: \"NPairMultiClassLoss\"\n"
      "    top: \"loss3/type_npair_mc\"\n"
      "    top: \"loss3/type_npair_mc_retrieve_top1\"\n"
      "    top: \"loss3/type_npair_mc_retrieve_top5\"\n"
      "    top: \"loss3/type_npair_mc_retrieve_top10\"\n"
      "    top: \"loss3/feature_asum\"\n"
      "    loss_weight: 1\n"
      "    loss_weight: 1\n"
      "    loss_weight: 1\n"
      "    loss_weight: 1\n"
      "    loss_weight: 1\n"
      "    npair_loss_param {\n"
      "        margin_ident: 0.0\n"
      "        margin_diff: -0.05\n"
      "        identsn: -0.0\n"
      "        diffsn: -0.3 #对于绝对选择来说该项无效\n"
      "        ap_mining_region: GLOBAL\n"
      "        ap_mining_method: RELATIVE_HARD\n"
      "        an_mining_region: LOCAL\n"
      "        an_mining_method: HARD # RELATIVE_HARD\n"
      "    }\n"
      "    #loss_weight: 1\n"
      "    #include {\n"
      "    #    phase: TRAIN\n"
      "    #}\n"
      "} \n";
  NetParameter net_param;
  ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(proto, &net_param));
  Net<Dtype> net(net_param);
  Blob<Dtype>* data = net.blob_by_name("pool5/7x7_s1").get();
  caffe_rng_gaussian<Dtype>(data->count(), 0, 1, data->mutable_cpu_data());
  const double y[] = {0, 0, 0, 1, 1, 2, 2, 3};
  std::copy(y, y + 8, net.blob_by_name("label_type_mb")->mutable_cpu_data());
  Dtype loss;
  net.Forward(&loss);
  net.Backward();

  const Blob<Dtype>& norm = *net.blob_by_name("loss3/pool5/7x7_s1/norm");
  const NPairExpected expected = NPairReference(
      vector<double>(norm.cpu_data(), norm.cpu_data() + norm.count()),
      vector<double>(y, y + 8), 5,
      net_param.layer(2).npair_loss_param());
  const char* tops[] = {"loss3/type_npair_mc",
      "loss3/type_npair_mc_retrieve_top1", "loss3/type_npair_mc_retrieve_top5",
      "loss3/type_npair_mc_retrieve_top10", "loss3/feature_asum"};
  const double values[] = {expected.loss, expected.recall[0],
      expected.recall[1], expected.recall[2], expected.asum};
  double sum = 0;
  for (int i = 0; i < 5; ++i) {
    EXPECT_NEAR(values[i], net.blob_by_name(tops[i])->cpu_data()[0],
                1e-4 * std::max(values[i], 1.)) << tops[i];
    sum += values[i];
  }
  EXPECT_NEAR(sum, loss, 1e-4 * sum);
  // The monitors' weights of 1 reach the solver's loss, not the gradient.
  for (int i = 0; i < norm.count(); ++i) {
    EXPECT_NEAR(expected.grad[i], norm.cpu_diff()[i], 1e-5);
  }
}

// Set-up errors name the layer and the problem.
template <typename Dtype>
class NPairMultiClassLossLayerDeathTest : public ::testing::Test {
 protected:
  NPairMultiClassLossLayerDeathTest()
      : features_(4, 2, 1, 1), labels_(vector<int>(1, 4)) {
    // Re-executing the binary keeps a forked child clear of BLAS threads.
    ::testing::FLAGS_gtest_death_test_style = "threadsafe";
    bottom_.push_back(&features_);
    bottom_.push_back(&labels_);
    top_.push_back(&loss_);
  }
  Blob<Dtype> features_, labels_, loss_;
  vector<Blob<Dtype>*> bottom_, top_;
};

TYPED_TEST_CASE(NPairMultiClassLossLayerDeathTest, TestDtypes);

TYPED_TEST(NPairMultiClassLossLayerDeathTest, TestLabelCount) {
  NPairMultiClassLossLayer<TypeParam> layer((LayerParameter()));
  this->labels_.Reshape(4, 2, 1, 1);
  EXPECT_DEATH(layer.SetUp(this->bottom_, this->top_),
               "NPairMultiClassLoss Layer: bottom.1. must hold exactly one "
               "label per sample");
}

TYPED_TEST(NPairMultiClassLossLayerDeathTest, TestBatchTooLargeForInt) {
  NPairMultiClassLossLayer<TypeParam> layer((LayerParameter()));
  this->features_.Reshape(46341, 1, 1, 1);
  this->labels_.Reshape(vector<int>(1, 46341));
  EXPECT_DEATH(layer.SetUp(this->bottom_, this->top_),
               "NPairMultiClassLoss Layer: a batch of 46341 samples against "
               "46341 \\+ 0 candidates needs similarity buffers larger than "
               "Caffe's int indexing");
}

TYPED_TEST(NPairMultiClassLossLayerDeathTest, TestTooManyTops) {
  NPairMultiClassLossLayer<TypeParam> layer((LayerParameter()));
  vector<Blob<TypeParam>*> top(6, &this->loss_);
  EXPECT_DEATH(layer.SetUp(this->bottom_, top),
               "NPairMultiClassLoss Layer produces at most 5 top blob");
}

TYPED_TEST(NPairMultiClassLossLayerDeathTest, TestNonFiniteParameters) {
  const char* fields[] = {"margin_ident", "margin_diff", "identsn", "diffsn"};
  for (int f = 0; f < 4; ++f) {
    LayerParameter param;  // RAND everywhere: none of these is used.
    NPairLossParameter* p = param.mutable_npair_loss_param();
    const float bad = (f % 2) ? std::numeric_limits<float>::quiet_NaN()
                              : -std::numeric_limits<float>::infinity();
    if (f == 0) { p->set_margin_ident(bad); }
    if (f == 1) { p->set_margin_diff(bad); }
    if (f == 2) { p->set_identsn(bad); }
    if (f == 3) { p->set_diffsn(bad); }
    NPairMultiClassLossLayer<TypeParam> layer(param);
    EXPECT_DEATH(layer.SetUp(this->bottom_, this->top_),
                 string("NPairMultiClassLoss Layer: npair_loss_param.") +
                 fields[f] + " must be finite");
  }
}

TYPED_TEST(NPairMultiClassLossLayerDeathTest, TestNoGradientToLabels) {
  NPairMultiClassLossLayer<TypeParam> layer((LayerParameter()));
  EXPECT_FALSE(layer.AllowForceBackward(1));
  EXPECT_TRUE(layer.AllowForceBackward(0));
  layer.SetUp(this->bottom_, this->top_);
  layer.Forward(this->bottom_, this->top_);
  EXPECT_DEATH(layer.Backward(this->top_, vector<bool>(2, true), this->bottom_),
               "NPairMultiClassLoss Layer cannot backpropagate to label");
}

}  // namespace caffe
