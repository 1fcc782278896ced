#include <vector>

#include "caffe/layers/cross_batch_memory_layer.hpp"
#include "caffe/util/math_functions.hpp"

namespace caffe {

// The same pass on the device copies: the rows move device to device, the
// three counters stay on the host.
template <typename Dtype>
void CrossBatchMemoryLayer<Dtype>::Forward_gpu(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  Pass(bottom, top, true);
}

template <typename Dtype>
void CrossBatchMemoryLayer<Dtype>::Backward_gpu(
    const vector<Blob<Dtype>*>& top, const vector<bool>& propagate_down,
    const vector<Blob<Dtype>*>& bottom) {
  for (int b = 0; b < 2; ++b) {
    if (propagate_down[b] && bottom[b]->count() > 0) {
      caffe_gpu_set(bottom[b]->count(), Dtype(0),
                    bottom[b]->mutable_gpu_diff());
    }
  }
}

INSTANTIATE_LAYER_GPU_FUNCS(CrossBatchMemoryLayer);

}  // namespace caffe
