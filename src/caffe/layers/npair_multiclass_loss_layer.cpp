#include <stdint.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <limits>
#include <vector>

#include "caffe/layers/npair_multiclass_loss_layer.hpp"
#include "caffe/util/math_functions.hpp"
#include "caffe/util/npair_cpu_matrix.hpp"
#include "caffe/util/npair_loss_recipe.hpp"
#include "caffe/util/npair_row_kernels.hpp"

namespace caffe {

using npair_cpu::kMinParallelRows;

namespace {

// The largest similarity of query i's positives (-inf when none; a NaN never
// wins), the bound of its Recall@K count.
template <typename Dtype>
Dtype BestPositive(const NPairSimilarities<Dtype>& sim,
    const NPairPositiveIndex& positives, const int i) {
  const Dtype* s = sim.row(i);
  Dtype best = -std::numeric_limits<Dtype>::infinity();
  for (const int* c = positives.group_begin(i); c != positives.group_end(i);
       ++c) {
    if (*c != i && s[*c] > best) { best = s[*c]; }
  }
  return best;
}

}  // namespace

template <typename Dtype>
void NPairMultiClassLossLayer<Dtype>::LayerSetUp(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  CHECK(bottom.size() != 3) << type() << " Layer: references come as two "
      "bottoms, bottom[2] the features and bottom[3] the labels; got only "
      "bottom[2]";
  // LossLayer's default weighs a single top; the monitors must weigh 0, and
  // Layer::SetLossWeights wants one weight per top once any is given.
  if (this->layer_param_.loss_weight_size() == 0) {
    this->layer_param_.add_loss_weight(Dtype(1));
    for (int i = 1; i < top.size(); ++i) {
      this->layer_param_.add_loss_weight(Dtype(0));
    }
  }
  miner_.reset(new NPairMiner<Dtype>(this->layer_param_.npair_loss_param(),
                                     type()));
}

template <typename Dtype>
void NPairMultiClassLossLayer<Dtype>::Reshape(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  // Caffe lets a blob have no axes or a zero dimension; the loss of an empty
  // batch would be 0 / 0, and an empty blob has no memory to read.
  CHECK(bottom[0]->num_axes() >= 1 && bottom[0]->count() > 0) << type()
      << " Layer: bottom[0] (the features) must hold N >= 1 samples of at "
      "least one value each; got shape " << bottom[0]->shape_string();
  num_ = bottom[0]->shape(0);
  dim_ = bottom[0]->count(1);
  CHECK(bottom[1]->num_axes() >= 1 && bottom[1]->shape(0) == num_ &&
        bottom[1]->count() == num_) << type() << " Layer: bottom[1] must hold "
      "exactly one label per sample, with the batch size N = " << num_
      << " as its first axis; got shape " << bottom[1]->shape_string();
  num_refs_ = 0;
  if (bottom.size() == 4) {
    num_refs_ = bottom[2]->num_axes() >= 1 ? bottom[2]->shape(0) : -1;
    CHECK(num_refs_ >= 0 && bottom[2]->count(1) == dim_) << type()
        << " Layer: bottom[2] (the references) must hold M >= 0 rows of the "
        "features' D = " << dim_ << " values; got shape "
        << bottom[2]->shape_string();
    CHECK(bottom[3]->num_axes() >= 1 && bottom[3]->shape(0) == num_refs_ &&
          bottom[3]->count() == num_refs_) << type() << " Layer: bottom[3] "
        "must hold exactly one label per reference, with M = " << num_refs_
        << " as its first axis; got shape " << bottom[3]->shape_string();
  }
  // The N x C buffers are indexed with int, as everything in Caffe is (their
  // rows are padded by up to two cache lines).
  const int64_t cells = static_cast<int64_t>(num_) *
      (static_cast<int64_t>(num_) + num_refs_ + 128 / sizeof(Dtype));
  CHECK_LE(cells, INT_MAX) << type() << " Layer: a batch of " << num_
      << " samples against " << num_ << " + " << num_refs_ << " candidates "
      "needs similarity buffers larger than Caffe's int indexing allows; "
      "split the batch or the references";
  count_ = num_ + num_refs_;
  ld_ = npair_cpu::PaddedRowLength<Dtype>(count_);
  LossLayer<Dtype>::Reshape(bottom, top);
  const vector<int> scalar(0);
  for (int i = 1; i < top.size(); ++i) {
    top[i]->Reshape(scalar);
  }
  vector<int> pairs_shape(2, num_);
  pairs_shape[1] = ld_;
  sim_.Reshape(pairs_shape);
  pair_weight_.Reshape(pairs_shape);
  candidate_labels_.Reshape(vector<int>(1, count_));
  miner_->Reshape(num_, count_);
  row_loss_.resize(num_);
  ahead_.resize(num_);
  const vector<int> rows(1, num_);
  gpu_row_loss_.Reshape(rows);
  gpu_row_asum_.Reshape(rows);
  gpu_recall_ahead_.Reshape(rows);
}

template <typename Dtype>
void NPairMultiClassLossLayer<Dtype>::Similarity_cpu(
    const vector<Blob<Dtype>*>& bottom) {
  Dtype* sim = sim_.mutable_cpu_data();
  const Dtype* features = bottom[0]->cpu_data();
  // The batch block is symmetric: syrk computes one triangle (half a
  // GEMM's work), and mirroring it makes S_ij and S_ji one value, as the
  // GLOBAL lists need.
  npair_cpu::SyrkUpper(num_, dim_, features, sim, ld_);
  npair_cpu::MirrorUpper(num_, ld_, sim);
  Dtype* labels = candidate_labels_.mutable_cpu_data();
  caffe_copy(num_, bottom[1]->cpu_data(), labels);
  if (num_refs_ > 0) {
    npair_cpu::Gemm(CblasNoTrans, CblasTrans, num_, num_refs_, dim_, Dtype(1),
        features, dim_, bottom[2]->cpu_data(), Dtype(0), sim + num_, ld_);
    caffe_copy(num_refs_, bottom[3]->cpu_data(), labels + num_);
  }
}

template <typename Dtype>
NPairSimilarities<Dtype> NPairMultiClassLossLayer<Dtype>::Similarities_cpu()
    const {
  const NPairSimilarities<Dtype> sim = {num_, count_, ld_, sim_.cpu_data(),
                                        candidate_labels_.cpu_data()};
  return sim;
}

template <typename Dtype>
Dtype NPairMultiClassLossLayer<Dtype>::LossAndPairWeights_cpu(
    const bool recall) {
  const NPairSimilarities<Dtype> sim = Similarities_cpu();
  const npair_cpu::NPairRowKernels<Dtype>& kernels =
      npair_cpu::NPairRowKernelsForCpu<Dtype>();
  Dtype* weight = pair_weight_.mutable_cpu_data();
  // The rows in parallel, their losses added in row order: the loss is the
  // same for any number of threads. In double: l_i is a difference of two
  // log-sum-exps that can be much larger than it.
#pragma omp parallel for schedule(dynamic, 16) if (num_ >= kMinParallelRows)
  for (int i = 0; i < num_; ++i) {
    const npair_cpu::NPairRow<Dtype> row = {sim.row(i), sim.labels, count_,
                                            i, sim.labels[i]};
    const bool eligible =
        recall && NPairRecallEligible(positives_.num_positives(i));
    const Dtype best = eligible ? BestPositive(sim, positives_, i) : Dtype(0);
    row_loss_[i] = kernels.loss_row(row, miner_->KeptBounds_cpu(i),
        eligible ? &best : NULL, weight + static_cast<size_t>(i) * ld_,
        &ahead_[i]);
    if (!eligible) { ahead_[i] = -1; }
  }
  double loss = 0;
  for (int i = 0; i < num_; ++i) { loss += row_loss_[i]; }
  return loss / num_;
}

template <typename Dtype>
void NPairMultiClassLossLayer<Dtype>::WriteRecall(
    const vector<Blob<Dtype>*>& top) const {
  const int kRecallK[] = {1, 5, 10};  // the tops' order
  int eligible = 0, hits[3] = {0, 0, 0};  // integer: exact
  for (int i = 0; i < num_; ++i) {
    if (ahead_[i] < 0) { continue; }
    ++eligible;
    for (int k = 0; k < 3; ++k) { hits[k] += ahead_[i] < kRecallK[k]; }
  }
  const int num_k = top.size() - 2;  // The tops between loss and asum.
  for (int k = 0; k < num_k; ++k) {
    top[1 + k]->mutable_cpu_data()[0] =
        eligible ? Dtype(hits[k]) / eligible : Dtype(0);
  }
}

template <typename Dtype>
void NPairMultiClassLossLayer<Dtype>::Forward_cpu(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  Similarity_cpu(bottom);
  positives_.Build(candidate_labels_.cpu_data(), num_, count_);
  miner_->Mine_cpu(Similarities_cpu(), positives_);
  const bool recall = top.size() > 2;
  top[0]->mutable_cpu_data()[0] = LossAndPairWeights_cpu(recall);
  if (recall) { WriteRecall(top); }
  if (top.size() > 1) {
    top.back()->mutable_cpu_data()[0] =
        caffe_cpu_asum(bottom[0]->count(), bottom[0]->cpu_data()) / num_;
  }
}

template <typename Dtype>
Dtype NPairMultiClassLossLayer<Dtype>::GradientScale(
    const vector<Blob<Dtype>*>& top,
    const vector<bool>& propagate_down) const {
  // Asked for the batch's labels' gradient, the net is wrong. The
  // references' labels are asked for whenever their layer passes gradients
  // back (CrossBatchMemory passes a zero one): they get none, and their diff
  // is left alone.
  CHECK(!propagate_down[1]) << type()
      << " Layer cannot backpropagate to label inputs (bottom[1]).";
  return top[0]->cpu_diff()[0] / num_;
}

template <typename Dtype>
void NPairMultiClassLossLayer<Dtype>::Backward_cpu(
    const vector<Blob<Dtype>*>& top, const vector<bool>& propagate_down,
    const vector<Blob<Dtype>*>& bottom) {
  const Dtype alpha = GradientScale(top, propagate_down);
  const Dtype* weight = pair_weight_.cpu_data();
  const Dtype* features = bottom[0]->cpu_data();
  if (propagate_down[0]) {
    // (G_B + G_B^T) X as one GEMM, G_B + G_B^T in sim_ (free once Forward
    // is done); pair_weight_ keeps G, so Backward can run again.
    Dtype* weight_sum = sim_.mutable_cpu_data();
    npair_cpu::AddTranspose(num_, ld_, weight, weight_sum);
    Dtype* diff = bottom[0]->mutable_cpu_diff();
    npair_cpu::Gemm(CblasNoTrans, CblasNoTrans, num_, dim_, num_, alpha,
        weight_sum, ld_, features, Dtype(0), diff, dim_);
    if (num_refs_ > 0) {
      npair_cpu::Gemm(CblasNoTrans, CblasNoTrans, num_, dim_, num_refs_,
          alpha, weight + num_, ld_, bottom[2]->cpu_data(), Dtype(1), diff,
          dim_);
    }
  }
  if (bottom.size() == 4 && propagate_down[2] && num_refs_ > 0) {
    npair_cpu::Gemm(CblasTrans, CblasNoTrans, num_refs_, dim_, num_, alpha,
        weight + num_, ld_, features, Dtype(0), bottom[2]->mutable_cpu_diff(),
        dim_);
  }
}

#ifdef CPU_ONLY
STUB_GPU(NPairMultiClassLossLayer);
#endif

INSTANTIATE_CLASS(NPairMultiClassLossLayer);
REGISTER_LAYER_CLASS(NPairMultiClassLoss);

}  // namespace caffe
