// The CUDA path of NPairMultiClassLossLayer: the steps of Forward_cpu and
// Backward_cpu (similarity, thresholds, mining, loss and pair weights,
// Recall@K, feature_asum; then (G + G^T) X) as the device passes of
// caffe/util/npair_gpu_passes.hpp, with the same rules from
// caffe/util/npair_selection.hpp. Nothing N x N leaves the GPU, and nothing
// is read back: the scalar tops are written by a kernel, so Forward does not
// stop to wait for the device.
//
// Buffers: sim_ (S), pair_weight_ (G / (g / N), as on the CPU) and
// pair_scratch_ (G + G^T in Backward), three N x N; the per-query scratch
// of the CUDA path, sized in Reshape (see the layer's header).

#include <math.h>

#include <algorithm>
#include <vector>

#include "caffe/layers/npair_multiclass_loss_layer.hpp"
#include "caffe/util/math_functions.hpp"
#include "caffe/util/npair_gpu_passes.hpp"

namespace caffe {

template <typename Dtype>
void NPairMultiClassLossLayer<Dtype>::Forward_gpu(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  const NPairLossParameter& param = this->layer_param_.npair_loss_param();
  const int num = bottom[0]->shape(0);
  const int dim = bottom[0]->count(1);
  const Dtype* features = bottom[0]->gpu_data();
  const Dtype* labels = bottom[1]->gpu_data();
  npair_gpu::Similarity(num, dim, features, sim_.mutable_gpu_data());
  const Dtype* sim = sim_.gpu_data();

  // Thresholds. RAND leaves its threshold alone, as Thresholds_cpu does.
  // HARD / EASY share their pass over S with the Recall@K counts.
  const NPairMiningMethod ap = param.ap_mining_method();
  const NPairMiningMethod an = param.an_mining_method();
  const NPairMiningMethod rand = NPairLossParameter_MiningMethod_RAND;
  const bool pos_extreme = ap != rand && !NPairIsRelative(ap);
  const bool neg_extreme = an != rand && !NPairIsRelative(an);
  const bool pos_global =
      param.ap_mining_region() == NPairLossParameter_MiningRegion_GLOBAL;
  const bool neg_global =
      param.an_mining_region() == NPairLossParameter_MiningRegion_GLOBAL;
  const int num_k = std::max(0, static_cast<int>(top.size()) - 2);
  Dtype* pos_threshold = pos_threshold_.mutable_gpu_data();
  Dtype* neg_threshold = neg_threshold_.mutable_gpu_data();
  int* ahead = gpu_recall_ahead_.mutable_gpu_data();
  if (pos_extreme || neg_extreme || num_k > 0) {
    npair_gpu::RowExtremes(num, sim, labels, pos_extreme, neg_extreme,
        num_k > 0, pos_threshold, neg_threshold, ahead);
  }
  if (pos_extreme && pos_global) {
    npair_gpu::BatchExtreme(num, true, pos_threshold);
  }
  if (neg_extreme && neg_global) {
    npair_gpu::BatchExtreme(num, false, neg_threshold);
  }
  NPairRadixState* radix_state =
      static_cast<NPairRadixState*>(gpu_radix_state_.mutable_gpu_data());
  const Dtype inf = HUGE_VAL;
  if (NPairIsRelative(ap)) {
    npair_gpu::RelativeThresholds(num, sim, labels, true, pos_global,
        param.identsn(), -inf, radix_state, pos_threshold);
  }
  if (NPairIsRelative(an)) {
    npair_gpu::RelativeThresholds(num, sim, labels, false, neg_global,
        param.diffsn(), inf, radix_state, neg_threshold);
  }

  // Loss and pair weights, then every scalar top from the per-row values.
  double* row_loss = gpu_row_loss_.mutable_gpu_data();
  npair_gpu::LossAndPairWeights(num, sim, labels, pos_threshold,
      neg_threshold, ap, an, param.margin_ident(), param.margin_diff(),
      pair_weight_.mutable_gpu_data(), row_loss);
  npair_gpu::ScalarTops<Dtype> tops = {top[0]->mutable_gpu_data(),
                                       {NULL, NULL, NULL}, NULL};
  for (int k = 0; k < num_k; ++k) {
    tops.recall[k] = top[1 + k]->mutable_gpu_data();
  }
  double* row_asum = NULL;
  if (top.size() > 1) {
    row_asum = gpu_row_asum_.mutable_gpu_data();
    npair_gpu::RowAbsSums(num, dim, features, row_asum);
    tops.feature_asum = top.back()->mutable_gpu_data();
  }
  npair_gpu::WriteTops(num, row_loss, ahead, row_asum, tops);
}

template <typename Dtype>
void NPairMultiClassLossLayer<Dtype>::Backward_gpu(
    const vector<Blob<Dtype>*>& top, const vector<bool>& propagate_down,
    const vector<Blob<Dtype>*>& bottom) {
  const int num = bottom[0]->shape(0);
  const Dtype alpha = GradientScale(top, propagate_down, num);
  if (!propagate_down[0]) { return; }
  const int dim = bottom[0]->count(1);
  // (G + G^T) X as one product: the transpose-add costs a pass over N x N,
  // a second product 2 N^2 D flops.
  Dtype* weight_sum = pair_scratch_.mutable_gpu_data();
  npair_gpu::AddTranspose(num, pair_weight_.gpu_data(), weight_sum);
  caffe_gpu_gemm<Dtype>(CblasNoTrans, CblasNoTrans, num, dim, num, alpha,
      weight_sum, bottom[0]->gpu_data(), Dtype(0),
      bottom[0]->mutable_gpu_diff());
}

INSTANTIATE_LAYER_GPU_FUNCS(NPairMultiClassLossLayer);

}  // namespace caffe
