#include <algorithm>
#include <cmath>
#include <vector>

#include "gtest/gtest.h"

#include "caffe/blob.hpp"
#include "caffe/common.hpp"
#include "caffe/filler.hpp"
#include "caffe/layers/l2_normalize_layer.hpp"
#include "caffe/util/math_functions.hpp"

#include "caffe/test/test_caffe_main.hpp"
#include "caffe/test/test_gradient_check_util.hpp"

namespace caffe {

template <typename TypeParam>
class L2NormalizeLayerTest : public MultiDeviceTest<TypeParam> {
  typedef typename TypeParam::Dtype Dtype;

 protected:
  // An N x C x H x W shape with nothing square about it.
  L2NormalizeLayerTest() : bottom_(3, 2, 1, 3) {
    Caffe::set_random_seed(1701);
    FillerParameter filler_param;
    filler_param.set_std(2);
    GaussianFiller<Dtype> filler(filler_param);
    filler.Fill(&bottom_);
    bottom_vec_.push_back(&bottom_);
    top_vec_.push_back(&top_);
  }

  // y = x / sqrt(sum x^2 + 1e-12) per sample, in double.
  void ExpectNormalized(const Blob<Dtype>& x, const Blob<Dtype>& y) {
    const int num = x.shape(0), dim = x.count(1);
    const double tol = sizeof(Dtype) == 4 ? 1e-6 : 1e-14;
    for (int n = 0; n < num; ++n) {
      double sum_sq = 0;
      for (int k = 0; k < dim; ++k) {
        sum_sq += static_cast<double>(x.cpu_data()[n * dim + k]) *
            x.cpu_data()[n * dim + k];
      }
      const double norm = std::sqrt(sum_sq + 1e-12);
      for (int k = 0; k < dim; ++k) {
        EXPECT_NEAR(x.cpu_data()[n * dim + k] / norm,
                    y.cpu_data()[n * dim + k], tol);
      }
    }
  }

  Blob<Dtype> bottom_, top_;
  vector<Blob<Dtype>*> bottom_vec_, top_vec_;
};

TYPED_TEST_CASE(L2NormalizeLayerTest, TestDtypesAndDevices);

TYPED_TEST(L2NormalizeLayerTest, TestForward) {
  typedef typename TypeParam::Dtype Dtype;
  L2NormalizeLayer<Dtype> layer((LayerParameter()));
  layer.SetUp(this->bottom_vec_, this->top_vec_);
  EXPECT_EQ(this->bottom_.shape(), this->top_.shape());
  layer.Forward(this->bottom_vec_, this->top_vec_);
  this->ExpectNormalized(this->bottom_, this->top_);
  // Each sample (all of C x H x W) has norm 1.
  for (int n = 0; n < 3; ++n) {
    EXPECT_NEAR(1, caffe_cpu_dot(6, this->top_.cpu_data() + n * 6,
                                 this->top_.cpu_data() + n * 6), 1e-6);
  }
}

TYPED_TEST(L2NormalizeLayerTest, TestForwardZeroSample) {
  typedef typename TypeParam::Dtype Dtype;
  caffe_set(6, Dtype(0), this->bottom_.mutable_cpu_data() + 6);
  L2NormalizeLayer<Dtype> layer((LayerParameter()));
  layer.SetUp(this->bottom_vec_, this->top_vec_);
  layer.Forward(this->bottom_vec_, this->top_vec_);
  for (int k = 6; k < 12; ++k) { EXPECT_EQ(0, this->top_.cpu_data()[k]); }
  this->ExpectNormalized(this->bottom_, this->top_);
}

TYPED_TEST(L2NormalizeLayerTest, TestForwardInPlace) {
  typedef typename TypeParam::Dtype Dtype;
  Blob<Dtype> x;
  x.CopyFrom(this->bottom_, false, true);
  L2NormalizeLayer<Dtype> layer((LayerParameter()));
  layer.SetUp(this->bottom_vec_, this->bottom_vec_);
  layer.Forward(this->bottom_vec_, this->bottom_vec_);
  this->ExpectNormalized(x, this->bottom_);
}

TYPED_TEST(L2NormalizeLayerTest, TestBackwardInPlace) {
  typedef typename TypeParam::Dtype Dtype;
  Blob<Dtype> top_diff;
  top_diff.ReshapeLike(this->bottom_);
  caffe_rng_gaussian<Dtype>(top_diff.count(), 0, 1,
                            top_diff.mutable_cpu_data());
  // Out of place.
  Blob<Dtype> x;
  x.CopyFrom(this->bottom_, false, true);
  L2NormalizeLayer<Dtype> layer((LayerParameter()));
  layer.SetUp(this->bottom_vec_, this->top_vec_);
  layer.Forward(this->bottom_vec_, this->top_vec_);
  caffe_copy(top_diff.count(), top_diff.cpu_data(),
             this->top_.mutable_cpu_diff());
  layer.Backward(this->top_vec_, vector<bool>(1, true), this->bottom_vec_);
  // In place: the top is the bottom, its diff holds the top's diff.
  vector<Blob<Dtype>*> in_place(1, &x);
  L2NormalizeLayer<Dtype> in_place_layer((LayerParameter()));
  in_place_layer.SetUp(in_place, in_place);
  in_place_layer.Forward(in_place, in_place);
  caffe_copy(top_diff.count(), top_diff.cpu_data(), x.mutable_cpu_diff());
  in_place_layer.Backward(in_place, vector<bool>(1, true), in_place);
  const double tol = sizeof(Dtype) == 4 ? 1e-6 : 1e-14;
  for (int i = 0; i < x.count(); ++i) {
    const Dtype expected = this->bottom_.cpu_diff()[i];
    EXPECT_NEAR(expected, x.cpu_diff()[i], tol * std::max(Dtype(1),
                                                          std::fabs(expected)));
  }
}

TYPED_TEST(L2NormalizeLayerTest, TestGradient) {
  typedef typename TypeParam::Dtype Dtype;
  L2NormalizeLayer<Dtype> layer((LayerParameter()));
  GradientChecker<Dtype> checker(1e-3, 1e-3);
  checker.CheckGradientExhaustive(&layer, this->bottom_vec_, this->top_vec_);
}

TYPED_TEST(L2NormalizeLayerTest, TestGradientFlatSamples) {
  typedef typename TypeParam::Dtype Dtype;
  // N x D, and a single value per sample (y = sign(x): gradient ~ 0).
  const int dims[] = {5, 1};
  for (int d = 0; d < 2; ++d) {
    vector<int> shape(2, 4);
    shape[1] = dims[d];
    this->bottom_.Reshape(shape);
    caffe_rng_gaussian<Dtype>(this->bottom_.count(), 0, 1,
                              this->bottom_.mutable_cpu_data());
    L2NormalizeLayer<Dtype> layer((LayerParameter()));
    GradientChecker<Dtype> checker(1e-3, 1e-3);
    checker.CheckGradientExhaustive(&layer, this->bottom_vec_, this->top_vec_);
  }
}

}  // namespace caffe
