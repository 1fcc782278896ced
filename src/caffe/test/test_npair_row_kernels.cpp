// The CPU building blocks of the N-pair loss on their own: the row passes,
// which must give the same bits for every instruction set they are compiled
// for, and the index of positive pairs, against brute force.

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "gtest/gtest.h"

#include "caffe/common.hpp"
#include "caffe/util/math_functions.hpp"
#include "caffe/util/npair_miner.hpp"
#include "caffe/util/npair_positive_index.hpp"
#include "caffe/util/npair_row_kernels.hpp"

#include "caffe/test/npair_reference.hpp"
#include "caffe/test/test_caffe_main.hpp"

namespace caffe {

using npair_cpu::NPairRow;
using npair_cpu::NPairRowKernels;

template <typename Dtype>
class NPairRowKernelsTest : public ::testing::Test {
 protected:
  NPairRowKernelsTest() { Caffe::set_random_seed(1701); }

  // A row of `count` similarities: Gaussian, some ties, optionally a
  // non-finite value; labels from a few classes, some NaN.
  void DrawRow(const int count, const bool non_finite) {
    s_.resize(count);
    labels_.resize(count);
    vector<double> g(count);
    caffe_rng_gaussian<double>(count, 0, 1, g.data());
    for (int j = 0; j < count; ++j) {
      s_[j] = (j % 7 == 3) ? Dtype(0.5) : static_cast<Dtype>(g[j]);
      const int c = caffe_rng_rand() % 11;
      labels_[j] = (c == 10) ? std::numeric_limits<Dtype>::quiet_NaN()
                             : Dtype(c % 4);
    }
    if (non_finite) {
      s_[caffe_rng_rand() % count] = std::numeric_limits<Dtype>::infinity();
    }
  }

  vector<Dtype> s_, labels_;
};

TYPED_TEST_CASE(NPairRowKernelsTest, TestDtypes);

TYPED_TEST(NPairRowKernelsTest, TestEveryInstructionSetGivesTheSameBits) {
  typedef TypeParam Dtype;
  const vector<const NPairRowKernels<Dtype>*> kernels =
      npair_cpu::NPairRowKernelsAvailable<Dtype>();
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2")) {
    ASSERT_GE(kernels.size(), 2) << "no wider set was compiled in";
  }
#endif
  const NPairLossParameter::MiningMethod methods[] = {
      NPairLossParameter::HARD, NPairLossParameter::EASY,
      NPairLossParameter::RAND, NPairLossParameter::RELATIVE_HARD};
  // Lengths around the widths of a pack and of a block of packs.
  const int counts[] = {1, 2, 7, 16, 17, 31, 130, 257, 1000};
  for (int c = 0; c < 9; ++c) {
    for (int trial = 0; trial < 12; ++trial) {
      const int count = counts[c];
      this->DrawRow(count, trial == 11);
      const int self = caffe_rng_rand() % count;
      const NPairRow<Dtype> row = {this->s_.data(), this->labels_.data(),
                                   count, self, this->labels_[self]};
      NPairKeptBounds<Dtype> kept;
      const double t_pos = 0.3 * (trial % 3) - 0.2, t_neg = 0.1 * trial - 0.5;
      NPairKeptRange<Dtype>(true, methods[trial % 4], t_pos, 0.05, &kept.lo_pos,
                            &kept.hi_pos);
      NPairKeptRange<Dtype>(false, methods[(trial / 4) % 4], t_neg, -0.1,
                            &kept.lo_neg, &kept.hi_neg);
      const Dtype bound = static_cast<Dtype>(0.1 * trial - 0.3);
      vector<Dtype> first_w;
      double first_loss = 0;
      int first_ahead = 0;
      Dtype first_max = 0;
      for (int k = 0; k < kernels.size(); ++k) {
        SCOPED_TRACE(kernels[k]->isa);
        vector<Dtype> w(count, Dtype(7));
        int ahead = -1;
        const double loss = kernels[k]->loss_row(row, kept, &bound, w.data(),
                                                 &ahead);
        const Dtype max = kernels[k]->max_negative(row);
        if (k == 0) {
          first_w = w;
          first_loss = loss;
          first_ahead = ahead;
          first_max = max;
          continue;
        }
        EXPECT_EQ(0, std::memcmp(w.data(), first_w.data(),
                                 count * sizeof(Dtype))) << count;
        EXPECT_EQ(0, std::memcmp(&loss, &first_loss, sizeof(loss)));
        EXPECT_EQ(first_ahead, ahead);
        EXPECT_EQ(0, std::memcmp(&max, &first_max, sizeof(max)));
      }
    }
  }
}

TYPED_TEST(NPairRowKernelsTest, TestLossRowMatchesItsDefinition) {
  // The widest kernels on one row against the recipe written out in double:
  // kept pairs, l_i, the weights and the Recall@K count.
  typedef TypeParam Dtype;
  const NPairRowKernels<Dtype>& kernels =
      npair_cpu::NPairRowKernelsForCpu<Dtype>();
  const int count = 203, self = 50;
  this->DrawRow(count, false);
  this->labels_[self] = 2;
  const NPairRow<Dtype> row = {this->s_.data(), this->labels_.data(), count,
                               self, Dtype(2)};
  const NPairKeptBounds<Dtype> kept = {Dtype(-0.5), Dtype(1.5), Dtype(0),
                                       Dtype(10)};
  const Dtype bound = Dtype(0.75);
  vector<Dtype> w(count);
  int ahead = -1;
  const double loss = kernels.loss_row(row, kept, &bound, w.data(), &ahead);
  double sum_all = 0, sum_pos = 0;
  int expected_ahead = 0;
  vector<bool> kept_pair(count, false);
  for (int j = 0; j < count; ++j) {
    if (j == self) { continue; }
    const bool same = this->labels_[j] == Dtype(2);
    const double s = this->s_[j];
    kept_pair[j] = same ? (s >= -0.5 && s <= 1.5) : (s >= 0 && s <= 10);
    expected_ahead += !same && s >= 0.75;
    if (!kept_pair[j]) { continue; }
    sum_all += std::exp(s);
    if (same) { sum_pos += std::exp(s); }
  }
  ASSERT_GT(sum_pos, 0);
  const double tol = sizeof(Dtype) == 4 ? 1e-5 : 1e-12;
  EXPECT_NEAR(std::log(sum_all) - std::log(sum_pos), loss, tol);
  EXPECT_EQ(expected_ahead, ahead);
  for (int j = 0; j < count; ++j) {
    const bool same = this->labels_[j] == Dtype(2);
    const double e = kept_pair[j] ? std::exp(this->s_[j]) : 0;
    const double expected = e / sum_all - (same ? e / sum_pos : 0);
    EXPECT_NEAR(expected, w[j], tol) << j;
  }
}

TEST(NPairPositiveIndexTest, TestMatchesBruteForce) {
  Caffe::set_random_seed(1701);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  NPairPositiveIndex index;
  for (int trial = 0; trial < 50; ++trial) {
    const int num = 1 + caffe_rng_rand() % 30;
    const int count = num + caffe_rng_rand() % 40;
    vector<double> labels(count);
    for (int c = 0; c < count; ++c) {
      const int v = caffe_rng_rand() % 13;
      labels[c] = (v == 12) ? nan : (v % (1 + trial % 9)) - 2.5;
    }
    index.Build(labels.data(), num, count);
    int64_t total = 0;
    for (int i = 0; i < num; ++i) {
      vector<int> expected;
      for (int c = 0; c < count; ++c) {
        if (c != i && labels[c] == labels[i]) { expected.push_back(c); }
      }
      vector<int> got;
      for (const int* c = index.group_begin(i); c != index.group_end(i); ++c) {
        if (*c != i) { got.push_back(*c); }
      }
      EXPECT_EQ(expected, got) << "trial " << trial << " query " << i;
      EXPECT_EQ(expected.size(), index.num_positives(i));
      total += expected.size();
    }
    EXPECT_EQ(total, index.total_positives());
  }
}

}  // namespace caffe
