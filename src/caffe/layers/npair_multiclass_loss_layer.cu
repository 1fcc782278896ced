// The CUDA path of NPairMultiClassLossLayer: the steps of Forward_cpu and
// Backward_cpu (similarity, mining, loss, pair weights and Recall@K,
// feature_asum; then the gradients) as the device passes of
// caffe/util/npair_gpu_passes.hpp and the miner's Mine_gpu. Nothing N x C
// leaves the GPU, and nothing is read back: the scalar tops are written by a
// kernel, so Forward does not stop to wait for the device.

#include <algorithm>
#include <vector>

#include "caffe/layers/npair_multiclass_loss_layer.hpp"
#include "caffe/util/math_functions.hpp"
#include "caffe/util/npair_gpu_passes.hpp"

namespace caffe {

template <typename Dtype>
void NPairMultiClassLossLayer<Dtype>::Forward_gpu(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  const Dtype* features = bottom[0]->gpu_data();
  // (A blob of no references has no memory to read.)
  const Dtype* refs = num_refs_ > 0 ? bottom[2]->gpu_data() : NULL;
  npair_gpu::Similarity(num_, num_refs_, dim_, features, refs, ld_,
                        sim_.mutable_gpu_data());
  Dtype* labels = candidate_labels_.mutable_gpu_data();
  caffe_copy(num_, bottom[1]->gpu_data(), labels);
  if (num_refs_ > 0) {
    caffe_copy(num_refs_, bottom[3]->gpu_data(), labels + num_);
  }
  const NPairSimilarities<Dtype> sim = {num_, count_, ld_, sim_.gpu_data(),
                                        labels};
  miner_->Mine_gpu(sim);

  const NPairLossParameter& param = miner_->param();
  const bool ap_rand = param.ap_mining_method() == NPairLossParameter::RAND;
  const bool an_rand = param.an_mining_method() == NPairLossParameter::RAND;
  const npair_gpu::RowMining<Dtype> mining = {
      param.ap_mining_method(), param.an_mining_method(),
      param.margin_ident(), param.margin_diff(),
      ap_rand ? NULL : miner_->pos_threshold().gpu_data(),
      an_rand ? NULL : miner_->neg_threshold().gpu_data()};
  const int num_k = std::max(0, static_cast<int>(top.size()) - 2);
  int* ahead = num_k > 0 ? gpu_recall_ahead_.mutable_gpu_data() : NULL;
  double* row_loss = gpu_row_loss_.mutable_gpu_data();
  npair_gpu::LossAndPairWeights(sim, mining, pair_weight_.mutable_gpu_data(),
                                row_loss, ahead);

  npair_gpu::ScalarTops<Dtype> tops = {top[0]->mutable_gpu_data(),
                                       {NULL, NULL, NULL}, NULL};
  for (int k = 0; k < num_k; ++k) {
    tops.recall[k] = top[1 + k]->mutable_gpu_data();
  }
  double* row_asum = NULL;
  if (top.size() > 1) {
    row_asum = gpu_row_asum_.mutable_gpu_data();
    npair_gpu::RowAbsSums(num_, dim_, features, row_asum);
    tops.feature_asum = top.back()->mutable_gpu_data();
  }
  npair_gpu::WriteTops(num_, row_loss, ahead, row_asum, tops);
}

template <typename Dtype>
void NPairMultiClassLossLayer<Dtype>::Backward_gpu(
    const vector<Blob<Dtype>*>& top, const vector<bool>& propagate_down,
    const vector<Blob<Dtype>*>& bottom) {
  const Dtype alpha = GradientScale(top, propagate_down);
  const Dtype* weight = pair_weight_.gpu_data();
  const Dtype* features = bottom[0]->gpu_data();
  if (propagate_down[0]) {
    // (G_B + G_B^T) X as one product, G_B + G_B^T in sim_ (free once Forward
    // is done): the transpose-add costs a pass over N x N, a second product
    // 2 N^2 D flops. pair_weight_ keeps G, so Backward can run again.
    Dtype* weight_sum = sim_.mutable_gpu_data();
    npair_gpu::AddTranspose(num_, ld_, weight, weight_sum);
    Dtype* diff = bottom[0]->mutable_gpu_diff();
    npair_gpu::Gemm(CblasNoTrans, CblasNoTrans, num_, dim_, num_, alpha,
        weight_sum, ld_, features, dim_, Dtype(0), diff, dim_);
    if (num_refs_ > 0) {
      npair_gpu::Gemm(CblasNoTrans, CblasNoTrans, num_, dim_, num_refs_,
          alpha, weight + num_, ld_, bottom[2]->gpu_data(), dim_, Dtype(1),
          diff, dim_);
    }
  }
  if (bottom.size() == 4 && propagate_down[2] && num_refs_ > 0) {
    npair_gpu::Gemm(CblasTrans, CblasNoTrans, num_refs_, dim_, num_, alpha,
        weight + num_, ld_, features, dim_, Dtype(0),
        bottom[2]->mutable_gpu_diff(), dim_);
  }
}

INSTANTIATE_LAYER_GPU_FUNCS(NPairMultiClassLossLayer);

}  // namespace caffe
