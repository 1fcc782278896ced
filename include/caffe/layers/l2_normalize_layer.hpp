#ifndef CAFFE_L2_NORMALIZE_LAYER_HPP_
#define CAFFE_L2_NORMALIZE_LAYER_HPP_

#include <vector>

#include "caffe/blob.hpp"
#include "caffe/layer.hpp"
#include "caffe/proto/caffe.pb.h"

namespace caffe {

/**
 * @brief Scales each sample to unit L2 norm over all its non-batch axes:
 *        @f$ y_n = x_n / \sqrt{\|x_n\|_2^2 + \epsilon} @f$, with
 *        @f$ \epsilon = 10^{-12} @f$ keeping an all-zero sample finite (it
 *        stays zero).
 *
 * Typically placed before an NPairMultiClassLoss layer, whose similarities are
 * then cosines.
 *
 * @param bottom input Blob vector (length 1)
 *   -# @f$ (N \times \ldots) @f$
 *      the inputs x, any shape with the batch as its first axis
 * @param top output Blob vector (length 1)
 *   -# @f$ (N \times \ldots) @f$, the shape of x:
 *      the outputs y, each sample of norm 1 (less for a sample of norm near
 *      @f$ \sqrt{\epsilon} @f$)
 */
template <typename Dtype>
class L2NormalizeLayer : public Layer<Dtype> {
 public:
  explicit L2NormalizeLayer(const LayerParameter& param)
      : Layer<Dtype>(param) {}
  virtual void Reshape(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);

  virtual inline const char* type() const { return "L2Normalize"; }
  virtual inline int ExactNumBottomBlobs() const { return 1; }
  virtual inline int ExactNumTopBlobs() const { return 1; }

 protected:
  /// @copydoc L2NormalizeLayer
  virtual void Forward_cpu(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Forward_gpu(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);

  /**
   * @brief Computes the exact gradient, per sample
   *        @f$ \frac{\partial E}{\partial x_n} =
   *        \left(g_n - (g_n \cdot y_n)\, y_n\right) / r_n @f$ with
   *        @f$ g_n = \frac{\partial E}{\partial y_n} @f$ and
   *        @f$ r_n = \sqrt{\|x_n\|_2^2 + \epsilon} @f$.
   */
  virtual void Backward_cpu(const vector<Blob<Dtype>*>& top,
      const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom);
  virtual void Backward_gpu(const vector<Blob<Dtype>*>& top,
      const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom);

  /// The @f$ \epsilon @f$ under the square root.
  static const double kEpsilon;

  Blob<Dtype> norm_;  ///< N: r_n of each sample, kept for Backward
};

}  // namespace caffe

#endif  // CAFFE_L2_NORMALIZE_LAYER_HPP_
