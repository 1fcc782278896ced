// The CUDA path's radix select (caffe/util/npair_radix_select.hpp) run on the
// host: the keys keep the order of the similarities, and its passes pick the
// same order statistic as std::nth_element at NPairRelativePosition. The
// device kernels only add how the histograms are counted; in a CUDA build
// the GPU tests at the end run them, through the layer's own launcher.

#include <algorithm>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"

#include "caffe/util/npair_radix_select.hpp"

#include "caffe/test/test_caffe_main.hpp"

#ifndef CPU_ONLY
#include "caffe/blob.hpp"
#include "caffe/syncedmem.hpp"
#include "caffe/util/npair_gpu_passes.hpp"
#endif

namespace caffe {

template <typename Dtype>
class NPairRadixSelectTest : public ::testing::Test {
 protected:
  typedef NPairRadixKey<Dtype> Radix;
  typedef typename Radix::Key Key;

  NPairRadixSelectTest() : rng_(1701) {}

  // The RELATIVE_* threshold of `list` with parameter sn as the kernels find
  // it: per 8-bit digit from the top, a histogram (with counts of type Count,
  // as the LOCAL and GLOBAL kernels differ) of the keys matching the digits
  // fixed so far, then NPairPickDigit. False for an empty list.
  template <typename Count>
  bool Select(const vector<Dtype>& list, const float sn, Dtype* value) {
    Key prefix = 0, mask = 0;
    long long rank = 0;  // NOLINT(runtime/int)
    int empty = 0;
    for (int shift = Radix::kBits - 8; shift >= 0; shift -= 8) {
      Count hist[256] = {0};
      for (int j = 0; j < list.size(); ++j) {
        const Key key = Radix::Of(list[j]);
        if ((key & mask) == prefix) { ++hist[(key >> shift) & 255]; }
      }
      NPairPickDigit(hist, shift, shift == Radix::kBits - 8, sn, &prefix,
                     &mask, &rank, &empty);
      if (empty) { return false; }
    }
    *value = Radix::Value(prefix);
    return true;
  }

  Dtype NthElement(vector<Dtype> list, const float sn) {
    const int k = NPairRelativePosition(list.size(), sn);
    std::nth_element(list.begin(), list.begin() + k, list.end());
    return list[k];
  }

  // n values from few distinct ones (ties), with zeros of both signs and,
  // if asked, infinities.
  vector<Dtype> List(const int n, const bool infinite) {
    const Dtype big = infinite ? std::numeric_limits<Dtype>::infinity() : 2;
    const Dtype pool[] = {Dtype(-0.0), Dtype(0), Dtype(0.25), Dtype(-3.5),
                          Dtype(1e-30), Dtype(-1e-30), Dtype(0.1), Dtype(7),
                          big, -big};
    std::uniform_int_distribution<int> pick(0, 9);
    std::normal_distribution<double> gaussian;
    vector<Dtype> list(n);
    for (int j = 0; j < n; ++j) {
      list[j] = j % 3 ? pool[pick(rng_)] : Dtype(gaussian(rng_));
    }
    return list;
  }

  std::mt19937 rng_;
};

TYPED_TEST_CASE(NPairRadixSelectTest, TestDtypes);

TYPED_TEST(NPairRadixSelectTest, TestKeysKeepTheOrder) {
  typedef TypeParam Dtype;
  typedef typename TestFixture::Radix Radix;
  typedef std::numeric_limits<Dtype> Limits;
  const Dtype ascending[] = {-Limits::infinity(), -Limits::max(), Dtype(-1.5),
      -Limits::min(), -Limits::denorm_min(), Dtype(-0.0), Dtype(0),
      Limits::denorm_min(), Limits::min(), Dtype(1), 1 + Limits::epsilon(),
      Limits::max(), Limits::infinity()};
  const int n = sizeof(ascending) / sizeof(ascending[0]);
  for (int a = 0; a < n; ++a) {
    SCOPED_TRACE(ascending[a]);
    const Dtype back = Radix::Value(Radix::Of(ascending[a]));
    EXPECT_EQ(0, memcmp(&back, &ascending[a], sizeof(back)));  // -0.0 too
    if (a + 1 < n) {
      EXPECT_LT(Radix::Of(ascending[a]), Radix::Of(ascending[a + 1]));
    }
  }
}

TYPED_TEST(NPairRadixSelectTest, TestSelectIsNthElement) {
  typedef TypeParam Dtype;
  const int sizes[] = {1, 2, 3, 7, 64, 300, 1001};
  const float sns[] = {0.0f, -0.0f, 1.0f, 2.5f, 7.0f, 1e30f, -0.05f, -0.3f,
                       -0.5f, -0.99f, -1.0f, -1e30f};
  for (int s = 0; s < sizeof(sizes) / sizeof(sizes[0]); ++s) {
    for (int infinite = 0; infinite < 2; ++infinite) {
      const vector<Dtype> list = this->List(sizes[s], infinite);
      for (int k = 0; k < sizeof(sns) / sizeof(sns[0]); ++k) {
        SCOPED_TRACE(testing::Message() << "n " << sizes[s] << ", sn "
                     << sns[k] << (infinite ? ", with infinities" : ""));
        const Dtype expected = this->NthElement(list, sns[k]);
        Dtype local, global;
        ASSERT_TRUE(this->template Select<unsigned int>(list, sns[k], &local));
        ASSERT_TRUE(this->template Select<unsigned long long>(  // NOLINT
            list, sns[k], &global));
        EXPECT_EQ(expected, local);
        EXPECT_EQ(expected, global);
      }
    }
  }
}

TYPED_TEST(NPairRadixSelectTest, TestEmptyListSelectsNothing) {
  TypeParam value = 0;
  EXPECT_FALSE(this->template Select<unsigned int>(vector<TypeParam>(), -0.5f,
                                                   &value));
}

#ifndef CPU_ONLY

// npair_gpu::RelativeThresholds, the device's radix select, against
// std::nth_element over the lists it selects from: every query's (LOCAL) and
// every (query, candidate) pair's (GLOBAL) list of positives or of
// negatives, from similarities of tie-heavy values with zeros of both signs
// and, if asked, infinities, in rows padded past their C candidates.
// Batches of one sample (every list empty), of a few, and with rows longer
// than a block; with and without references; labels of few classes, a NaN
// label among them.
template <typename Dtype>
class NPairRadixSelectGPUTest : public NPairRadixSelectTest<Dtype> {
 protected:
  // The threshold of every query as the layer's CPU path defines it; sim is
  // num x count, rows ld apart.
  static vector<Dtype> Expected(const vector<Dtype>& sim, const int ld,
      const vector<Dtype>& labels, const int num, const bool same_label,
      const bool global, const float sn, const Dtype empty_value) {
    const int count = labels.size();
    vector<Dtype> batch_list, expected(num);
    vector<vector<Dtype> > lists(num);
    for (int i = 0; i < num; ++i) {
      for (int c = 0; c < count; ++c) {
        if (c != i && (labels[c] == labels[i]) == same_label) {
          lists[i].push_back(sim[i * ld + c]);
          batch_list.push_back(sim[i * ld + c]);
        }
      }
    }
    for (int i = 0; i < num; ++i) {
      const vector<Dtype>& list = global ? batch_list : lists[i];
      expected[i] = list.empty() ? empty_value : NthElement(list, sn);
    }
    return expected;
  }
  static Dtype NthElement(vector<Dtype> list, const float sn) {
    const int k = NPairRelativePosition(list.size(), sn);
    std::nth_element(list.begin(), list.begin() + k, list.end());
    return list[k];
  }
};

TYPED_TEST_CASE(NPairRadixSelectGPUTest, TestDtypes);

TYPED_TEST(NPairRadixSelectGPUTest, TestSelectIsNthElement) {
  typedef TypeParam Dtype;
  const Dtype inf = std::numeric_limits<Dtype>::infinity();
  const int nums[] = {1, 2, 7, 300}, refs[] = {0, 3, 0, 517};
  const float sns[] = {0.0f, -0.0f, 1.0f, 2.5f, 7.0f, 1e30f, -0.05f, -0.3f,
                       -0.5f, -0.99f, -1.0f, -1e30f};
  SyncedMemory state(sizeof(NPairRadixState));
  for (int s = 0; s < sizeof(nums) / sizeof(nums[0]); ++s) {
    const int num = nums[s], count = num + refs[s], ld = count + 5;
    for (int infinite = 0; infinite < 2; ++infinite) {
      const vector<Dtype> sim = this->List(num * ld, infinite);
      vector<Dtype> labels(count);
      for (int c = 0; c < count; ++c) {
        labels[c] = (c % 11 == 5) ? std::numeric_limits<Dtype>::quiet_NaN()
                                  : Dtype(this->rng_() % 3);
      }
      Blob<Dtype> sim_blob(vector<int>(1, sim.size()));
      Blob<Dtype> labels_blob(vector<int>(1, count));
      Blob<Dtype> threshold(vector<int>(1, num));
      std::copy(sim.begin(), sim.end(), sim_blob.mutable_cpu_data());
      std::copy(labels.begin(), labels.end(), labels_blob.mutable_cpu_data());
      const NPairSimilarities<Dtype> device_sim = {num, count, ld,
          sim_blob.gpu_data(), labels_blob.gpu_data()};
      for (int k = 0; k < sizeof(sns) / sizeof(sns[0]); ++k) {
        for (int kind = 0; kind < 4; ++kind) {
          const bool same_label = kind % 2, global = kind / 2;
          const Dtype empty_value = same_label ? -inf : inf;
          SCOPED_TRACE(testing::Message() << "N " << num << ", C " << count
              << ", sn " << sns[k]
              << (same_label ? ", positives" : ", negatives")
              << (global ? ", GLOBAL" : ", LOCAL")
              << (infinite ? ", with infinities" : ""));
          npair_gpu::RelativeThresholds(device_sim, same_label, global,
              sns[k], empty_value,
              static_cast<NPairRadixState*>(state.mutable_gpu_data()),
              threshold.mutable_gpu_data());
          const vector<Dtype> expected = this->Expected(sim, ld, labels, num,
              same_label, global, sns[k], empty_value);
          for (int i = 0; i < num; ++i) {
            EXPECT_EQ(expected[i], threshold.cpu_data()[i]) << "query " << i;
          }
        }
      }
    }
  }
}

#endif  // !CPU_ONLY

}  // namespace caffe
