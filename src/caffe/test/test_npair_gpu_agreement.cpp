// The CUDA paths of NPairMultiClassLoss and L2Normalize against their CPU
// paths, on batches larger than the layer tests use: rows longer than a
// block, matrices of many tiles, batch-wide radix selects over many blocks.
// Each test runs the same layer configuration in CPU and in GPU mode, on
// separate blobs, and compares every top and the gradient.
//
// Built only into a CUDA build (CMakeLists.txt leaves it out of CPU_ONLY
// ones); there, a machine without a usable CUDA device fails every test.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "gtest/gtest.h"

#include "caffe/blob.hpp"
#include "caffe/common.hpp"
#include "caffe/layers/l2_normalize_layer.hpp"
#include "caffe/layers/npair_multiclass_loss_layer.hpp"

#include "caffe/test/test_caffe_main.hpp"

#ifdef CPU_ONLY
#error "the CPU-GPU agreement test needs a CUDA build (CAFFE_NPAIR_CUDA=ON)"
#endif

namespace caffe {

namespace {

typedef NPairLossParameter P;  // For the enum names.

// Empty when a CUDA device is usable, else why not.
std::string NoGpuReason() {
  int count = 0;
  const cudaError_t error = cudaGetDeviceCount(&count);
  if (error != cudaSuccess) {
    return std::string("cudaGetDeviceCount: ") + cudaGetErrorString(error);
  }
  return count > 0 ? "" : "no CUDA device";
}

vector<bool> FeaturesOnly() {
  vector<bool> down(2, false);
  down[0] = true;
  return down;
}

// What one run of a layer produced.
template <typename Dtype>
struct Outputs {
  vector<Dtype> tops;  // every top's data, in order
  vector<Dtype> grad;  // bottom[0]'s diff
};

// The largest |a - b| over |b|'s largest element (or 1, if larger).
template <typename Dtype>
double RelativeGap(const vector<Dtype>& a, const vector<Dtype>& b) {
  double gap = 0, scale = 1;
  for (int i = 0; i < a.size(); ++i) {
    gap = std::max(gap, std::fabs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::fabs(static_cast<double>(b[i])));
  }
  return gap / scale;
}

}  // namespace

template <typename Dtype>
class NPairGpuAgreementTest : public ::testing::Test {
 protected:
  NPairGpuAgreementTest() : rng_state_(1701) {}
  virtual void SetUp() {
    ASSERT_EQ("", NoGpuReason()) << "CPU-GPU agreement needs a CUDA device";
  }
  virtual void TearDown() { Caffe::set_mode(Caffe::CPU); }

  // A reproducible integer in [0, n), independent of Caffe's generators.
  int Draw(const int n) {
    rng_state_ = rng_state_ * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<int>((rng_state_ >> 33) % n);
  }
  // Features on a grid of eighths: every product and sum of a row is exact
  // in float, so both paths see the same S (ties included) and must mine the
  // same pairs; only exp, log and summation order may differ.
  void GridBatch(const int num, const int dim, const int classes) {
    features_.Reshape(num, dim, 1, 1);
    labels_.Reshape(vector<int>(1, num));
    for (int i = 0; i < features_.count(); ++i) {
      features_.mutable_cpu_data()[i] = (Draw(7) - 3) / Dtype(8);
    }
    for (int i = 0; i < num; ++i) {
      labels_.mutable_cpu_data()[i] = Draw(classes);
    }
  }
  // Continuous features of norm about 1: no ties, S rounded differently by
  // the two GEMMs (see TestGaussianFeatures for what that asks of a batch).
  void GaussianBatch(const int num, const int dim, const int classes) {
    GridBatch(num, dim, classes);
    for (int i = 0; i < features_.count(); ++i) {
      const double u = (Draw(1 << 20) + 0.5) / (1 << 20);
      const double v = (Draw(1 << 20) + 0.5) / (1 << 20);
      features_.mutable_cpu_data()[i] = std::sqrt(-2 * std::log(u)) *
          std::cos(2 * M_PI * v) / std::sqrt(static_cast<double>(dim));
    }
  }

  // How far the current batch is from a change in what LOCAL (or RAND)
  // mining p keeps or in a Recall@K count, in similarity units: over every
  // row, the smallest distance between a similarity that a rule compares and
  // its threshold plus margin (the threshold's own similarity left out when
  // the margin is 0: it is kept by its rule's equality on any path), and
  // between the best positive and a negative. In double, from the features
  // both paths get.
  double ComparisonSlack(const NPairLossParameter& p) {
    CHECK(p.ap_mining_region() == P::LOCAL && p.an_mining_region() == P::LOCAL)
        << "batch-wide lists are not checked";
    const int num = features_.shape(0), dim = features_.count(1);
    const Dtype* x = features_.cpu_data();
    const Dtype* y = labels_.cpu_data();
    double slack = std::numeric_limits<double>::infinity();
    for (int i = 0; i < num; ++i) {
      vector<double> positives, negatives;
      for (int j = 0; j < num; ++j) {
        if (j == i) { continue; }
        double s = 0;
        for (int k = 0; k < dim; ++k) {
          s += static_cast<double>(x[i * dim + k]) * x[j * dim + k];
        }
        (y[j] == y[i] ? positives : negatives).push_back(s);
      }
      if (!positives.empty()) {
        const double best =
            *std::max_element(positives.begin(), positives.end());
        for (int m = 0; m < negatives.size(); ++m) {
          slack = std::min(slack, std::fabs(negatives[m] - best));
        }
      }
      slack = std::min(slack, RuleSlack(p.ap_mining_method(), p.identsn(),
          p.margin_ident(), true, positives, negatives));
      slack = std::min(slack, RuleSlack(p.an_mining_method(), p.diffsn(),
          p.margin_diff(), false, negatives, positives));
    }
    return slack;
  }
  // One row's slack for the rule on its positives (or negatives): `kind`
  // holds the similarities the rule keeps or drops, `other` the other kind.
  static double RuleSlack(const P::MiningMethod method, const float sn,
      const float margin, const bool positives, vector<double> kind,
      const vector<double>& other) {
    const double none = std::numeric_limits<double>::infinity();
    if (method == P::RAND || kind.empty()) { return none; }
    double threshold;
    int own = -1;  // the threshold's own entry of `kind`, if it has one
    if (NPairIsRelative(method)) {
      std::sort(kind.begin(), kind.end());
      own = NPairRelativePosition(kind.size(), sn);
      threshold = kind[own];
    } else if (other.empty()) {
      return none;  // compared with an infinity
    } else {
      threshold = positives ? *std::max_element(other.begin(), other.end())
                            : *std::min_element(other.begin(), other.end());
    }
    double slack = none;
    for (int a = 0; a < kind.size(); ++a) {
      if (a == own && margin == 0) { continue; }
      slack = std::min(slack, std::fabs(kind[a] - (threshold + margin)));
    }
    return slack;
  }
  // The most the two paths' S can differ by: twice the float rounding bound
  // of a dot product of length D, gamma_D |x_i| |x_j|.
  double SimilarityRoundingBound() {
    const int num = features_.shape(0), dim = features_.count(1);
    const double u = std::numeric_limits<Dtype>::epsilon() / 2;
    double largest = 0;
    for (int i = 0; i < num; ++i) {
      double norm2 = 0;
      for (int k = 0; k < dim; ++k) {
        norm2 += static_cast<double>(features_.cpu_data()[i * dim + k]) *
                 features_.cpu_data()[i * dim + k];
      }
      largest = std::max(largest, norm2);
    }
    return 2 * (dim * u / (1 - dim * u)) * largest;
  }

  // Forward with 5 tops, then Backward with loss weight `weight`, in `mode`.
  Outputs<Dtype> RunNPair(const Caffe::Brew mode, const LayerParameter& param,
      const Dtype weight) {
    Caffe::set_mode(mode);
    Blob<Dtype> features, labels;
    features.CopyFrom(features_, false, true);
    labels.CopyFrom(labels_, false, true);
    vector<Blob<Dtype>*> bottom;
    bottom.push_back(&features);
    bottom.push_back(&labels);
    Blob<Dtype> top_blobs[5];
    vector<Blob<Dtype>*> top;
    for (int i = 0; i < 5; ++i) { top.push_back(&top_blobs[i]); }
    NPairMultiClassLossLayer<Dtype> layer(param);
    layer.SetUp(bottom, top);
    layer.Forward(bottom, top);
    top[0]->mutable_cpu_diff()[0] = weight;
    caffe_set(features.count(), Dtype(7), features.mutable_cpu_diff());
    layer.Backward(top, FeaturesOnly(), bottom);
    Outputs<Dtype> out;
    for (int i = 0; i < 5; ++i) { out.tops.push_back(top[i]->cpu_data()[0]); }
    out.grad.assign(features.cpu_diff(),
                    features.cpu_diff() + features.count());
    return out;
  }

  // CPU and GPU on the current batch: R@K and feature_asum equal (the grid
  // makes them exact), loss and gradient within rounding.
  void ExpectAgreement(const NPairLossParameter& p) {
    SCOPED_TRACE(p.ShortDebugString());
    LayerParameter param;
    param.mutable_npair_loss_param()->CopyFrom(p);
    const Dtype weight = 1.75;
    const Outputs<Dtype> cpu = RunNPair(Caffe::CPU, param, weight);
    const Outputs<Dtype> gpu = RunNPair(Caffe::GPU, param, weight);
    const bool is_float = sizeof(Dtype) == 4;
    // Both paths take the loss in double from the same mined pairs.
    EXPECT_NEAR(cpu.tops[0], gpu.tops[0], (is_float ? 1e-5 : 1e-12) *
                std::max(1.0, std::fabs(static_cast<double>(cpu.tops[0]))));
    for (int k = 1; k < 4; ++k) {
      EXPECT_EQ(cpu.tops[k], gpu.tops[k]) << "R@K top " << k;
    }
    // Exact on the grid; a float sum of N x D terms otherwise.
    EXPECT_NEAR(cpu.tops[4], gpu.tops[4],
                (is_float ? 1e-4 : 1e-12) * std::fabs(cpu.tops[4]));
    // The GPU adds G + G^T before one product, the CPU makes two: float
    // sums over N terms in different orders.
    EXPECT_LT(RelativeGap(gpu.grad, cpu.grad), is_float ? 1e-4 : 1e-10);
    bool any_gradient = false;
    for (int i = 0; i < cpu.grad.size(); ++i) {
      any_gradient |= cpu.grad[i] != 0;
    }
    if (cpu.tops[0] != 0) { EXPECT_TRUE(any_gradient); }
  }

  // A spread of margins and sn values for the minings of one batch.
  NPairLossParameter Mining(const P::MiningRegion ap_region,
      const P::MiningMethod ap, const P::MiningRegion an_region,
      const P::MiningMethod an, const int variant) {
    const float identsn[] = {-0.3f, 2.0f, -0.0f, -1.0f};
    const float diffsn[] = {-0.0f, 1.0f, -0.3f, 5.0f};
    const float margin_ident[] = {0.0f, 0.125f, -0.25f, 0.0f};
    const float margin_diff[] = {-0.05f, 0.0f, 0.125f, 0.0f};
    NPairLossParameter p;
    p.set_ap_mining_region(ap_region);
    p.set_ap_mining_method(ap);
    p.set_an_mining_region(an_region);
    p.set_an_mining_method(an);
    p.set_identsn(identsn[variant % 4]);
    p.set_diffsn(diffsn[variant % 4]);
    p.set_margin_ident(margin_ident[variant % 4]);
    p.set_margin_diff(margin_diff[variant % 4]);
    return p;
  }

  // Every (region, method) pair for positives and negatives on this batch.
  void ExpectAgreementForAllMinings() {
    const P::MiningRegion regions[] = {P::LOCAL, P::GLOBAL};
    const P::MiningMethod methods[] = {P::HARD, P::EASY, P::RAND,
                                       P::RELATIVE_HARD, P::RELATIVE_EASY};
    int variant = 0;
    for (int ar = 0; ar < 2; ++ar) {
      for (int am = 0; am < 5; ++am) {
        for (int nr = 0; nr < 2; ++nr) {
          for (int nm = 0; nm < 5; ++nm) {
            ExpectAgreement(Mining(regions[ar], methods[am], regions[nr],
                                   methods[nm], variant++));
          }
        }
      }
    }
  }

  uint64_t rng_state_;
  Blob<Dtype> features_;
  Blob<Dtype> labels_;
};

TYPED_TEST_CASE(NPairGpuAgreementTest, TestDtypes);

TYPED_TEST(NPairGpuAgreementTest, TestAllMiningsSmallBatch) {
  this->GridBatch(37, 6, 5);
  this->ExpectAgreementForAllMinings();
}

// Rows longer than a block of 256 threads, 10 x 10 tiles of 32.
TYPED_TEST(NPairGpuAgreementTest, TestAllMiningsRowsLongerThanABlock) {
  this->GridBatch(300, 12, 11);
  this->ExpectAgreementForAllMinings();
}

// A batch-wide list of about a million pairs, ragged last tile.
TYPED_TEST(NPairGpuAgreementTest, TestGlobalRelativeLargeBatch) {
  this->GridBatch(1001, 16, 40);
  for (int variant = 0; variant < 4; ++variant) {
    this->ExpectAgreement(this->Mining(P::GLOBAL, P::RELATIVE_HARD,
        P::GLOBAL, P::RELATIVE_EASY, variant));
    this->ExpectAgreement(this->Mining(P::GLOBAL, P::HARD,
        P::LOCAL, P::RELATIVE_HARD, variant));
  }
}

// Edge batches: one sample, one class, all classes distinct, two samples.
TYPED_TEST(NPairGpuAgreementTest, TestEdgeBatches) {
  const int nums[] = {1, 8, 8, 2};
  const int classes[] = {1, 1, 1000, 2};
  for (int b = 0; b < 4; ++b) {
    SCOPED_TRACE(b);
    this->GridBatch(nums[b], 4, classes[b]);
    if (b == 2) {
      for (int i = 0; i < nums[b]; ++i) {
        this->labels_.mutable_cpu_data()[i] = i;
      }
    }
    this->ExpectAgreementForAllMinings();
  }
}

// Continuous features: the two paths' S differ by rounding, so a mining
// comparison or a Recall@K count within that rounding of flipping could
// rightly differ between them. Every batch is checked (ComparisonSlack) and
// redrawn until every comparison these minings make, and every Recall@K
// count, is at least 8 times the most the two S can differ by: more than
// 1e-4 here, where the float32 rounding is about 1e-5 at worst. That is why
// the batch is small and the lists LOCAL: the neighbours of an order
// statistic come closer than float rounding in rows of hundreds (a row of
// 512 had two negatives at the RELATIVE_EASY threshold 5.6e-8 apart) and in
// a batch-wide list of N (N - 1) pairs.
TYPED_TEST(NPairGpuAgreementTest, TestGaussianFeatures) {
  NPairLossParameter minings[3];
  minings[1].set_ap_mining_method(P::RELATIVE_HARD);
  minings[1].set_an_mining_method(P::RELATIVE_EASY);
  minings[1].set_identsn(1);
  minings[1].set_diffsn(-0.25f);
  minings[2].set_ap_mining_method(P::HARD);
  minings[2].set_an_mining_method(P::EASY);
  minings[2].set_margin_ident(0.125f);
  minings[2].set_margin_diff(-0.05f);
  for (int draw = 0; ; ++draw) {
    ASSERT_LT(draw, 100) << "no batch kept its comparisons clear of rounding";
    this->GaussianBatch(128, 32, 8);
    double slack = std::numeric_limits<double>::infinity();
    for (int m = 0; m < 3; ++m) {
      slack = std::min(slack, this->ComparisonSlack(minings[m]));
    }
    if (slack > 8 * this->SimilarityRoundingBound()) { break; }
  }
  for (int m = 0; m < 3; ++m) { this->ExpectAgreement(minings[m]); }
}

// NaN labels on the grid: a NaN-labelled sample has no positive and is never
// its own negative, on either path.
TYPED_TEST(NPairGpuAgreementTest, TestNaNLabels) {
  this->GridBatch(300, 8, 9);
  for (int i = 0; i < 300; i += 7) {
    this->labels_.mutable_cpu_data()[i] =
        std::numeric_limits<TypeParam>::quiet_NaN();
  }
  this->ExpectAgreementForAllMinings();
}

// A NaN or an infinity in the features makes the loss NaN on both paths, for
// every mining, and shows in the gradient.
TYPED_TEST(NPairGpuAgreementTest, TestNonFiniteFeaturesGiveNaN) {
  typedef TypeParam Dtype;
  typedef std::numeric_limits<Dtype> Limits;
  const Dtype values[] = {Limits::quiet_NaN(), Limits::infinity(),
                          -Limits::infinity()};
  for (int v = 0; v < 3; ++v) {
    this->GridBatch(40, 4, 5);
    this->features_.mutable_cpu_data()[13] = values[v];
    for (int m = 0; m < 100; ++m) {
      const P::MiningRegion regions[] = {P::LOCAL, P::GLOBAL};
      const P::MiningMethod methods[] = {P::HARD, P::EASY, P::RAND,
                                         P::RELATIVE_HARD, P::RELATIVE_EASY};
      LayerParameter param;
      param.mutable_npair_loss_param()->CopyFrom(this->Mining(
          regions[m / 50], methods[m / 10 % 5], regions[m / 5 % 2],
          methods[m % 5], m));
      SCOPED_TRACE(param.npair_loss_param().ShortDebugString());
      for (int gpu = 0; gpu < 2; ++gpu) {
        const Outputs<Dtype> out =
            this->RunNPair(gpu ? Caffe::GPU : Caffe::CPU, param, Dtype(1));
        EXPECT_TRUE(std::isnan(out.tops[0])) << (gpu ? "GPU" : "CPU");
        bool nan_gradient = false;
        for (int i = 0; i < out.grad.size(); ++i) {
          nan_gradient |= std::isnan(out.grad[i]);
        }
        EXPECT_TRUE(nan_gradient) << (gpu ? "GPU" : "CPU");
      }
    }
  }
}

template <typename Dtype>
class L2NormalizeGpuAgreementTest : public ::testing::Test {
 protected:
  virtual void SetUp() {
    ASSERT_EQ("", NoGpuReason()) << "CPU-GPU agreement needs a CUDA device";
  }
  virtual void TearDown() { Caffe::set_mode(Caffe::CPU); }

  // Forward and Backward (top diff = top_diff) in `mode`; in_place makes
  // top and bottom one blob. Fills y (the top) and dx (bottom's diff).
  void Run(const Caffe::Brew mode, const Blob<Dtype>& x,
      const Blob<Dtype>& top_diff, const bool in_place, vector<Dtype>* y,
      vector<Dtype>* dx) {
    Caffe::set_mode(mode);
    Blob<Dtype> bottom_blob, top_blob;
    bottom_blob.CopyFrom(x, false, true);
    vector<Blob<Dtype>*> bottom(1, &bottom_blob);
    vector<Blob<Dtype>*> top(1, in_place ? &bottom_blob : &top_blob);
    LayerParameter param;
    L2NormalizeLayer<Dtype> layer(param);
    layer.SetUp(bottom, top);
    layer.Forward(bottom, top);
    y->assign(top[0]->cpu_data(), top[0]->cpu_data() + x.count());
    caffe_copy(x.count(), top_diff.cpu_data(), top[0]->mutable_cpu_diff());
    layer.Backward(top, vector<bool>(1, true), bottom);
    dx->assign(bottom[0]->cpu_diff(), bottom[0]->cpu_diff() + x.count());
  }
};

TYPED_TEST_CASE(L2NormalizeGpuAgreementTest, TestDtypes);

TYPED_TEST(L2NormalizeGpuAgreementTest, TestForwardBackward) {
  typedef TypeParam Dtype;
  Caffe::set_random_seed(1701);
  const double tol = sizeof(Dtype) == 4 ? 1e-5 : 1e-12;
  // 3 x 7 x 11 = 231 values a sample, and 2 x 300 = 600, longer than a block.
  const int shapes[][4] = {{50, 3, 7, 11}, {9, 2, 300, 1}};
  for (int s = 0; s < 2; ++s) {
    Blob<Dtype> x(shapes[s][0], shapes[s][1], shapes[s][2], shapes[s][3]);
    Blob<Dtype> top_diff(x.shape());
    caffe_rng_gaussian(x.count(), Dtype(0), Dtype(2), x.mutable_cpu_data());
    caffe_set(x.count(1), Dtype(0), x.mutable_cpu_data());  // a zero sample
    caffe_rng_gaussian(x.count(), Dtype(0), Dtype(1),
                       top_diff.mutable_cpu_data());
    const int dim = x.count(1);
    for (int in_place = 0; in_place < 2; ++in_place) {
      SCOPED_TRACE(in_place ? "in place" : "out of place");
      vector<Dtype> y_cpu, dx_cpu, y_gpu, dx_gpu;
      this->Run(Caffe::CPU, x, top_diff, in_place, &y_cpu, &dx_cpu);
      this->Run(Caffe::GPU, x, top_diff, in_place, &y_gpu, &dx_gpu);
      // Per sample: the zero sample's gradient is 1e6 times the others'.
      for (int n = 0; n < x.shape(0); ++n) {
        SCOPED_TRACE(n);
        const int a = n * dim, b = a + dim;
        EXPECT_LT(RelativeGap(
            vector<Dtype>(y_gpu.begin() + a, y_gpu.begin() + b),
            vector<Dtype>(y_cpu.begin() + a, y_cpu.begin() + b)), tol);
        EXPECT_LT(RelativeGap(
            vector<Dtype>(dx_gpu.begin() + a, dx_gpu.begin() + b),
            vector<Dtype>(dx_cpu.begin() + a, dx_cpu.begin() + b)), tol);
      }
    }
  }
}

}  // namespace caffe
