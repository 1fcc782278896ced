#include <cmath>
#include <vector>

#include "caffe/layers/l2_normalize_layer.hpp"
#include "caffe/util/math_functions.hpp"

namespace caffe {

template <typename Dtype>
const double L2NormalizeLayer<Dtype>::kEpsilon = 1e-12;

template <typename Dtype>
void L2NormalizeLayer<Dtype>::Reshape(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {
  // Caffe lets a blob have no axes or a zero dimension, but an empty blob
  // has no memory to read: say so here rather than deep in Forward.
  CHECK(bottom[0]->num_axes() >= 1 && bottom[0]->count() > 0) << type()
      << " Layer: bottom[0] must hold N >= 1 samples of at least one value "
      "each; got shape " << bottom[0]->shape_string();
  top[0]->ReshapeLike(*bottom[0]);
  norm_.Reshape(vector<int>(1, bottom[0]->shape(0)));
}

template <typename Dtype>
void L2NormalizeLayer<Dtype>::Forward_cpu(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {
  const int num = bottom[0]->shape(0);
  const int dim = bottom[0]->count(1);
  const Dtype* x = bottom[0]->cpu_data();
  Dtype* y = top[0]->mutable_cpu_data();
  Dtype* norm = norm_.mutable_cpu_data();
  for (int n = 0; n < num; ++n) {
    norm[n] = std::sqrt(caffe_cpu_dot(dim, x + n * dim, x + n * dim) +
                        kEpsilon);
    // copy, then scale: in place (top == bottom) the copy is skipped.
    caffe_copy(dim, x + n * dim, y + n * dim);
    caffe_scal(dim, Dtype(1) / norm[n], y + n * dim);
  }
}

template <typename Dtype>
void L2NormalizeLayer<Dtype>::Backward_cpu(const vector<Blob<Dtype>*>& top,
    const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom) {
  if (!propagate_down[0]) { return; }
  const int num = bottom[0]->shape(0);
  const int dim = bottom[0]->count(1);
  const Dtype* y = top[0]->cpu_data();
  const Dtype* top_diff = top[0]->cpu_diff();
  Dtype* bottom_diff = bottom[0]->mutable_cpu_diff();
  const Dtype* norm = norm_.cpu_data();
  for (int n = 0; n < num; ++n) {
    // Read g . y before writing: in place, top_diff is bottom_diff.
    const Dtype g_dot_y = caffe_cpu_dot(dim, top_diff + n * dim, y + n * dim);
    caffe_copy(dim, top_diff + n * dim, bottom_diff + n * dim);
    caffe_axpy(dim, -g_dot_y, y + n * dim, bottom_diff + n * dim);
    caffe_scal(dim, Dtype(1) / norm[n], bottom_diff + n * dim);
  }
}

#ifdef CPU_ONLY
STUB_GPU(L2NormalizeLayer);
#endif

INSTANTIATE_CLASS(L2NormalizeLayer);
REGISTER_LAYER_CLASS(L2Normalize);

}  // namespace caffe
