// The measure that the CPU-GPU agreement test (test_npair_gpu_agreement.cpp)
// holds the CUDA path to, NPairRunsAgree of npair_agreement.hpp, tried on the
// CPU layer's own output for the batch shapes that test uses: a float run
// agrees with a double run of the same batch at every mining, and a
// gradient or loss 1% wrong is caught.

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "gtest/gtest.h"

#include "caffe/common.hpp"

#include "caffe/test/npair_agreement.hpp"
#include "caffe/test/test_caffe_main.hpp"

namespace caffe {

class NPairAgreementTest : public ::testing::Test {
 protected:
  virtual void SetUp() { Caffe::set_mode(Caffe::CPU); }

  // The grid batches of the CPU-GPU agreement test, by batch size.
  static NPairBatch Batch(const int num) {
    NPairDraw draw(1701);
    switch (num) {
    case 37:  return NPairGridBatch(37, 6, 5, &draw);
    case 300: return NPairGridBatch(300, 12, 11, &draw);
    default:  return NPairGridBatch(1001, 16, 40, &draw);
    }
  }

  // Mining `m` on the batch of size num, in float and in double.
  void RunBoth(const int num, const int m, NPairRun<float>* f,
      NPairRun<double>* d) {
    const NPairBatch batch = Batch(num);
    *f = NPairLayerRunner<float>(NPairMining(m), 5).Run(batch, 1.75f);
    *d = NPairLayerRunner<double>(NPairMining(m), 5).Run(batch, 1.75);
  }
};

namespace {
const int kNums[] = {37, 300, 1001};
}  // namespace

// At every mining: the float run agrees with the double run, and no longer
// does with its gradient scaled by 1.01, with only its element of smallest
// magnitude moved by 1% of the largest, or with its loss scaled by 1.01
// (where there is a gradient and a loss to spoil).
TEST_F(NPairAgreementTest, TestFloatRoundingPassesOnePercentFails) {
  const double tolerance = NPairAgreementTolerance<float>();
  for (int n = 0; n < 3; ++n) {
    int spoiled = 0;
    for (int m = 0; m < 100; ++m) {
      SCOPED_TRACE(testing::Message() << "N " << kNums[n] << ", "
                   << NPairMining(m).ShortDebugString());
      NPairRun<float> f;
      NPairRun<double> d;
      RunBoth(kNums[n], m, &f, &d);
      EXPECT_TRUE(NPairRunsAgree(f, d, tolerance));
      const vector<float>& grad = f.diffs[0];
      int smallest = 0;
      float largest = 0;
      for (int i = 0; i < grad.size(); ++i) {
        largest = std::max(largest, std::fabs(grad[i]));
        if (std::fabs(grad[i]) < std::fabs(grad[smallest])) { smallest = i; }
      }
      if (largest == 0 || f.tops[0] == 0) { continue; }
      ++spoiled;
      NPairRun<float> scaled = f;
      for (int i = 0; i < grad.size(); ++i) { scaled.diffs[0][i] *= 1.01f; }
      EXPECT_FALSE(NPairRunsAgree(scaled, d, tolerance));
      NPairRun<float> moved = f;
      moved.diffs[0][smallest] += 0.01f * largest;
      EXPECT_FALSE(NPairRunsAgree(moved, d, tolerance));
      NPairRun<float> loss = f;
      loss.tops[0] *= 1.01f;
      EXPECT_FALSE(NPairRunsAgree(loss, d, tolerance));
    }
    EXPECT_GE(spoiled, 50) << "N " << kNums[n] << ": too few minings learn";
  }
}

// With references (bottoms 2 and 3), more of them than queries: the float
// run agrees with the double run in both gradients at every mining.
TEST_F(NPairAgreementTest, TestFloatRoundingWithReferences) {
  NPairDraw draw(1701);
  const NPairBatch batch =
      NPairWithReferences(NPairGridBatch(128, 16, 40, &draw), 1000, 40, &draw);
  for (int m = 0; m < 100; ++m) {
    SCOPED_TRACE(NPairMining(m).ShortDebugString());
    const NPairRun<float> f =
        NPairLayerRunner<float>(NPairMining(m), 5).Run(batch, 1.75f);
    const NPairRun<double> d =
        NPairLayerRunner<double>(NPairMining(m), 5).Run(batch, 1.75);
    ASSERT_EQ(2, d.diffs.size());
    EXPECT_TRUE(NPairRunsAgree(f, d, NPairAgreementTolerance<float>()));
  }
}

TEST_F(NPairAgreementTest, TestAllZeroReferenceIsMatchedExactly) {
  const vector<double> zeros(5, 0.0);
  vector<float> tiny(5, 0.0f);
  EXPECT_EQ(0, NPairErrorRelativeToLargest(tiny, zeros));
  tiny[3] = 1e-30f;
  EXPECT_EQ(std::numeric_limits<double>::infinity(),
            NPairErrorRelativeToLargest(tiny, zeros));
}

TEST_F(NPairAgreementTest, TestErrorIsRelativeToTheLargestElement) {
  vector<double> reference(3);
  reference[0] = 2e-3;
  reference[1] = -4e-3;
  reference[2] = 1e-6;
  vector<double> run(reference);
  run[2] += 4e-5;  // 1% of the largest element, 40 times the element itself
  EXPECT_NEAR(0.01, NPairErrorRelativeToLargest(run, reference), 1e-12);
  run[2] = std::numeric_limits<double>::quiet_NaN();
  EXPECT_TRUE(std::isnan(NPairErrorRelativeToLargest(run, reference)));
}

}  // namespace caffe
