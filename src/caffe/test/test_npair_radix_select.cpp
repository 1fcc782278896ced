// The CUDA path's radix select (caffe/util/npair_radix_select.hpp) run on the
// host: the keys keep the order of the similarities, and its passes pick the
// same order statistic as std::nth_element at NPairRelativePosition. The
// device kernels only add how the histograms are counted.

#include <algorithm>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"

#include "caffe/util/npair_radix_select.hpp"

#include "caffe/test/test_caffe_main.hpp"

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

}  // namespace caffe
