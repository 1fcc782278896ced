// The CUDA paths of NPairMultiClassLoss and L2Normalize against their CPU
// paths, on batches larger than the layer tests use: rows longer than a
// block, matrices of many tiles, batch-wide radix selects over many blocks.
// Each NPairMultiClassLoss test runs one configuration in CPU and in GPU
// mode on the same batch and holds the GPU run to the CPU run with
// NPairRunsAgree (npair_agreement.hpp: R@K exactly, the loss and
// feature_asum relative to themselves, the gradient relative to its largest
// element, at a tolerance test_npair_agreement.cpp shows a 1% error fails).
// A batch is a list of bottoms (NPairBatch), so a batch with more bottoms
// runs through the same comparisons.
//
// Built only into a CUDA build (CMakeLists.txt leaves it out of CPU_ONLY
// ones); there, a machine without a usable CUDA device fails every test.

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "gtest/gtest.h"

#include "caffe/blob.hpp"
#include "caffe/common.hpp"
#include "caffe/layers/l2_normalize_layer.hpp"
#include "caffe/layers/npair_multiclass_loss_layer.hpp"

#include "caffe/test/npair_agreement.hpp"
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

// Whether a and b hold the same bits.
template <typename Dtype>
bool SameBits(const vector<Dtype>& a, const vector<Dtype>& b) {
  return a.size() == b.size() &&
      (a.empty() || memcmp(&a[0], &b[0], a.size() * sizeof(Dtype)) == 0);
}

}  // namespace

template <typename Dtype>
class NPairGpuAgreementTest : public ::testing::Test {
 protected:
  NPairGpuAgreementTest() : draw_(1701) {}
  virtual void SetUp() {
    ASSERT_EQ("", NoGpuReason()) << "CPU-GPU agreement needs a CUDA device";
  }
  virtual void TearDown() { Caffe::set_mode(Caffe::CPU); }

  NPairBatch Grid(const int num, const int dim, const int classes) {
    return NPairGridBatch(num, dim, classes, &draw_);
  }
  // Continuous features of norm about 1: no ties, S rounded differently by
  // the two paths' products (see TestGaussianFeatures for what that asks of
  // a batch). The values are Dtype's, as the layer gets them.
  NPairBatch Gaussian(const int num, const int dim, const int classes) {
    NPairBatch batch = Grid(num, dim, classes);
    for (int i = 0; i < batch.values[0].size(); ++i) {
      const double u = (draw_(1 << 20) + 0.5) / (1 << 20);
      const double v = (draw_(1 << 20) + 0.5) / (1 << 20);
      batch.values[0][i] = static_cast<Dtype>(std::sqrt(-2 * std::log(u)) *
          std::cos(2 * M_PI * v) / std::sqrt(static_cast<double>(dim)));
    }
    return batch;
  }

  // A fresh layer with num_tops tops, run in `mode` on the batch.
  static NPairRun<Dtype> RunIn(const Caffe::Brew mode, const NPairBatch& batch,
      const NPairLossParameter& p, const int num_tops) {
    Caffe::set_mode(mode);
    return NPairLayerRunner<Dtype>(p, num_tops).Run(batch, kWeight);
  }

  // The GPU run agrees with the CPU run; and where the CPU has a loss it
  // has a gradient, so the gradients compared are not two sets of zeros.
  static void ExpectAgreesWith(const NPairRun<Dtype>& gpu,
      const NPairRun<Dtype>& cpu) {
    EXPECT_TRUE(NPairRunsAgree(gpu, cpu, NPairAgreementTolerance<Dtype>()));
    if (cpu.tops[0] != 0) {
      bool any_gradient = false;
      for (int i = 0; i < cpu.diffs[0].size(); ++i) {
        any_gradient |= cpu.diffs[0][i] != 0;
      }
      EXPECT_TRUE(any_gradient);
    }
  }

  void ExpectAgreement(const NPairBatch& batch, const NPairLossParameter& p,
      const int num_tops = 5) {
    SCOPED_TRACE(testing::Message() << num_tops << " tops, "
                 << p.ShortDebugString());
    ExpectAgreesWith(RunIn(Caffe::GPU, batch, p, num_tops),
                     RunIn(Caffe::CPU, batch, p, num_tops));
  }

  // Every (region, method) pair for positives and negatives on this batch.
  void ExpectAgreementForAllMinings(const NPairBatch& batch) {
    for (int m = 0; m < 100; ++m) { ExpectAgreement(batch, NPairMining(m)); }
  }

  // How far the batch is from a change in what LOCAL (or RAND) mining p
  // keeps or in a Recall@K count, in similarity units: over every row, the
  // smallest distance between a similarity that a rule compares and its
  // threshold plus margin (the threshold's own similarity left out when the
  // margin is 0: it is kept by its rule's equality on any path), and between
  // the best positive and a negative. In double, from the features both
  // paths get.
  static double ComparisonSlack(const NPairBatch& batch,
      const NPairLossParameter& p) {
    CHECK(p.ap_mining_region() == P::LOCAL && p.an_mining_region() == P::LOCAL)
        << "batch-wide lists are not checked";
    const int num = batch.shapes[0][0], dim = batch.shapes[0][1];
    const vector<double>& x = batch.values[0];
    const vector<double>& y = batch.values[1];
    double slack = std::numeric_limits<double>::infinity();
    for (int i = 0; i < num; ++i) {
      vector<double> positives, negatives;
      for (int j = 0; j < num; ++j) {
        if (j == i) { continue; }
        double s = 0;
        for (int k = 0; k < dim; ++k) { s += x[i * dim + k] * x[j * dim + k]; }
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
  // The most the two paths' S can differ by: twice the Dtype rounding bound
  // of a dot product of length D, gamma_D |x_i| |x_j|.
  static double SimilarityRoundingBound(const NPairBatch& batch) {
    const int num = batch.shapes[0][0], dim = batch.shapes[0][1];
    const double u = std::numeric_limits<Dtype>::epsilon() / 2;
    double largest = 0;
    for (int i = 0; i < num; ++i) {
      double norm2 = 0;
      for (int k = 0; k < dim; ++k) {
        norm2 += batch.values[0][i * dim + k] * batch.values[0][i * dim + k];
      }
      largest = std::max(largest, norm2);
    }
    return 2 * (dim * u / (1 - dim * u)) * largest;
  }

  static const Dtype kWeight;  // top[0]'s diff: the loss weight
  NPairDraw draw_;
};

template <typename Dtype>
const Dtype NPairGpuAgreementTest<Dtype>::kWeight = 1.75;

TYPED_TEST_CASE(NPairGpuAgreementTest, TestDtypes);

TYPED_TEST(NPairGpuAgreementTest, TestAllMiningsSmallBatch) {
  this->ExpectAgreementForAllMinings(this->Grid(37, 6, 5));
}

// Rows longer than a block of 256 threads, 10 x 10 tiles of 32.
TYPED_TEST(NPairGpuAgreementTest, TestAllMiningsRowsLongerThanABlock) {
  this->ExpectAgreementForAllMinings(this->Grid(300, 12, 11));
}

// A batch-wide list of about a million pairs, ragged last tile.
TYPED_TEST(NPairGpuAgreementTest, TestGlobalRelativeLargeBatch) {
  const NPairBatch batch = this->Grid(1001, 16, 40);
  for (int variant = 0; variant < 4; ++variant) {
    this->ExpectAgreement(batch, NPairMining(P::GLOBAL, P::RELATIVE_HARD,
        P::GLOBAL, P::RELATIVE_EASY, variant));
    this->ExpectAgreement(batch, NPairMining(P::GLOBAL, P::HARD,
        P::LOCAL, P::RELATIVE_HARD, variant));
  }
}

// References (bottoms 2 and 3): none, fewer than the queries, more, and
// rows of candidates longer than a block; both gradients; every mining.
TYPED_TEST(NPairGpuAgreementTest, TestReferencesAllMinings) {
  const int refs[] = {0, 20, 300};
  for (int r = 0; r < 3; ++r) {
    SCOPED_TRACE(testing::Message() << refs[r] << " references");
    this->ExpectAgreementForAllMinings(
        NPairWithReferences(this->Grid(37, 6, 5), refs[r], 5, &this->draw_));
  }
}

// 1 to 5 tops: the loss alone, then feature_asum, then R@1, R@5, R@10
// between them; every mining.
TYPED_TEST(NPairGpuAgreementTest, TestEveryTopCount) {
  const NPairBatch batch = this->Grid(300, 12, 11);
  for (int num_tops = 1; num_tops <= 5; ++num_tops) {
    for (int m = 0; m < 100; ++m) {
      this->ExpectAgreement(batch, NPairMining(m), num_tops);
    }
  }
}

// The GPU path repeats itself bit for bit: Forward and Backward twice on
// one layer object give the same tops and gradient, at every mining.
TYPED_TEST(NPairGpuAgreementTest, TestRunTwiceSameBits) {
  typedef TypeParam Dtype;
  const NPairBatch batches[] = {this->Grid(1001, 16, 40),
      NPairWithReferences(this->Grid(128, 16, 40), 2000, 40, &this->draw_)};
  Caffe::set_mode(Caffe::GPU);
  for (int b = 0; b < 2; ++b) {
    for (int m = 0; m < 100; ++m) {
      SCOPED_TRACE(NPairMining(m).ShortDebugString());
      NPairLayerRunner<Dtype> runner(NPairMining(m), 5);
      const NPairRun<Dtype> first = runner.Run(batches[b], this->kWeight);
      const NPairRun<Dtype> second = runner.Run(batches[b], this->kWeight);
      EXPECT_TRUE(SameBits(first.tops, second.tops));
      for (int d = 0; d < first.diffs.size(); ++d) {
        EXPECT_TRUE(SameBits(first.diffs[d], second.diffs[d]));
      }
    }
  }
}

// One GPU layer object reshaped from batch to batch, as a net with inputs of
// changing size does (larger, smaller, larger than before, tiny), with
// Backward after each Forward; each run agrees with a fresh CPU layer's.
TYPED_TEST(NPairGpuAgreementTest, TestOneLayerAcrossBatchSizes) {
  typedef TypeParam Dtype;
  vector<NPairBatch> batches;
  batches.push_back(this->Grid(300, 12, 11));
  batches.push_back(this->Grid(37, 6, 5));
  batches.push_back(this->Grid(1001, 16, 40));
  batches.push_back(this->Grid(5, 3, 2));
  for (int m = 0; m < 100; ++m) {
    SCOPED_TRACE(NPairMining(m).ShortDebugString());
    NPairLayerRunner<Dtype> gpu_layer(NPairMining(m), 5);
    for (int b = 0; b < batches.size(); ++b) {
      SCOPED_TRACE(testing::Message() << "N " << batches[b].shapes[0][0]);
      Caffe::set_mode(Caffe::GPU);
      const NPairRun<Dtype> gpu = gpu_layer.Run(batches[b], this->kWeight);
      this->ExpectAgreesWith(gpu,
          this->RunIn(Caffe::CPU, batches[b], NPairMining(m), 5));
    }
  }
}

// Edge batches: one sample, one class, all classes distinct, two samples.
TYPED_TEST(NPairGpuAgreementTest, TestEdgeBatches) {
  const int nums[] = {1, 8, 8, 2};
  const int classes[] = {1, 1, 1000, 2};
  for (int b = 0; b < 4; ++b) {
    SCOPED_TRACE(b);
    NPairBatch batch = this->Grid(nums[b], 4, classes[b]);
    if (b == 2) {
      for (int i = 0; i < nums[b]; ++i) { batch.values[1][i] = i; }
    }
    this->ExpectAgreementForAllMinings(batch);
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
  NPairBatch batch;
  for (int draw = 0; ; ++draw) {
    ASSERT_LT(draw, 100) << "no batch kept its comparisons clear of rounding";
    batch = this->Gaussian(128, 32, 8);
    double slack = std::numeric_limits<double>::infinity();
    for (int m = 0; m < 3; ++m) {
      slack = std::min(slack, this->ComparisonSlack(batch, minings[m]));
    }
    if (slack > 8 * this->SimilarityRoundingBound(batch)) { break; }
  }
  for (int m = 0; m < 3; ++m) { this->ExpectAgreement(batch, minings[m]); }
}

// NaN labels on the grid: a NaN-labelled sample has no positive and is never
// its own negative, on either path.
TYPED_TEST(NPairGpuAgreementTest, TestNaNLabels) {
  NPairBatch batch = this->Grid(300, 8, 9);
  for (int i = 0; i < 300; i += 7) {
    batch.values[1][i] = std::numeric_limits<double>::quiet_NaN();
  }
  this->ExpectAgreementForAllMinings(batch);
}

// A NaN or an infinity in the features makes the loss NaN on both paths, for
// every mining, and shows in the gradient.
TYPED_TEST(NPairGpuAgreementTest, TestNonFiniteFeaturesGiveNaN) {
  typedef TypeParam Dtype;
  const double values[] = {std::numeric_limits<double>::quiet_NaN(),
                           std::numeric_limits<double>::infinity(),
                           -std::numeric_limits<double>::infinity()};
  for (int v = 0; v < 3; ++v) {
    NPairBatch batch = this->Grid(40, 4, 5);
    batch.values[0][13] = values[v];
    for (int m = 0; m < 100; ++m) {
      SCOPED_TRACE(NPairMining(m).ShortDebugString());
      for (int gpu = 0; gpu < 2; ++gpu) {
        const NPairRun<Dtype> out = this->RunIn(gpu ? Caffe::GPU : Caffe::CPU,
                                                batch, NPairMining(m), 5);
        EXPECT_TRUE(std::isnan(out.tops[0])) << (gpu ? "GPU" : "CPU");
        bool nan_gradient = false;
        for (int i = 0; i < out.diffs[0].size(); ++i) {
          nan_gradient |= std::isnan(out.diffs[0][i]);
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
  // Per sample, relative to its largest element: a float CPU run is within
  // 1.6e-7 of a double CPU run of these samples, for y and for dx.
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
        EXPECT_LE(NPairErrorRelativeToLargest(
            vector<Dtype>(y_gpu.begin() + a, y_gpu.begin() + b),
            vector<Dtype>(y_cpu.begin() + a, y_cpu.begin() + b)), tol);
        EXPECT_LE(NPairErrorRelativeToLargest(
            vector<Dtype>(dx_gpu.begin() + a, dx_gpu.begin() + b),
            vector<Dtype>(dx_cpu.begin() + a, dx_cpu.begin() + b)), tol);
      }
    }
  }
}

}  // namespace caffe
