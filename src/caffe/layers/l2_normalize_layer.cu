// The CUDA path of L2NormalizeLayer: one block per sample reduces its squared
// norm (or g . y) in double, then scales the sample. In place (top == bottom)
// works as on the CPU: every element is read and written by the same thread,
// after the block's reduction.

#include <vector>

#include "caffe/layers/l2_normalize_layer.hpp"
#include "caffe/util/npair_block_reduce.cuh"

namespace caffe {

namespace {

using npair_gpu::BlockAllReduce;
using npair_gpu::kBlockThreads;
using npair_gpu::SumOp;

/// Sample n = blockIdx.x: norm[n] = sqrt(|x_n|^2 + eps), y_n = x_n / norm[n].
template <typename Dtype>
__global__ void L2NormalizeForward(const int dim, const double epsilon,
    const Dtype* x, Dtype* y, Dtype* norm) {
  const size_t offset = static_cast<size_t>(blockIdx.x) * dim;
  double sum_sq = 0;
  for (int d = threadIdx.x; d < dim; d += kBlockThreads) {
    const double v = x[offset + d];
    sum_sq += v * v;
  }
  const Dtype r = sqrt(BlockAllReduce(sum_sq, SumOp()) + epsilon);
  if (threadIdx.x == 0) { norm[blockIdx.x] = r; }
  const Dtype scale = Dtype(1) / r;
  for (int d = threadIdx.x; d < dim; d += kBlockThreads) {
    y[offset + d] = x[offset + d] * scale;
  }
}

/// Sample n = blockIdx.x: dx_n = (g_n - (g_n . y_n) y_n) / norm[n].
template <typename Dtype>
__global__ void L2NormalizeBackward(const int dim, const Dtype* y,
    const Dtype* top_diff, const Dtype* norm, Dtype* bottom_diff) {
  const size_t offset = static_cast<size_t>(blockIdx.x) * dim;
  double g_dot_y = 0;
  for (int d = threadIdx.x; d < dim; d += kBlockThreads) {
    g_dot_y += static_cast<double>(top_diff[offset + d]) * y[offset + d];
  }
  const Dtype dot = BlockAllReduce(g_dot_y, SumOp());
  const Dtype scale = Dtype(1) / norm[blockIdx.x];
  for (int d = threadIdx.x; d < dim; d += kBlockThreads) {
    bottom_diff[offset + d] =
        (top_diff[offset + d] - dot * y[offset + d]) * scale;
  }
}

}  // namespace

template <typename Dtype>
void L2NormalizeLayer<Dtype>::Forward_gpu(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {
  const int num = bottom[0]->shape(0);
  const int dim = bottom[0]->count(1);
  // NOLINT_NEXT_LINE(whitespace/operators)
  L2NormalizeForward<Dtype><<<num, kBlockThreads>>>(dim, kEpsilon,
      bottom[0]->gpu_data(), top[0]->mutable_gpu_data(),
      norm_.mutable_gpu_data());
  CUDA_POST_KERNEL_CHECK;
}

template <typename Dtype>
void L2NormalizeLayer<Dtype>::Backward_gpu(const vector<Blob<Dtype>*>& top,
    const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom) {
  if (!propagate_down[0]) { return; }
  const int num = bottom[0]->shape(0);
  const int dim = bottom[0]->count(1);
  // NOLINT_NEXT_LINE(whitespace/operators)
  L2NormalizeBackward<Dtype><<<num, kBlockThreads>>>(dim, top[0]->gpu_data(),
      top[0]->gpu_diff(), norm_.gpu_data(), bottom[0]->mutable_gpu_diff());
  CUDA_POST_KERNEL_CHECK;
}

INSTANTIATE_LAYER_GPU_FUNCS(L2NormalizeLayer);

}  // namespace caffe
