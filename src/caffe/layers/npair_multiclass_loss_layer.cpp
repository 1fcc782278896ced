#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "caffe/layers/npair_multiclass_loss_layer.hpp"
#include "caffe/util/math_functions.hpp"

namespace caffe {

namespace {

// K of the Recall@K tops, in top order.
const int kRecallK[] = {1, 5, 10};

}  // namespace

template <typename Dtype>
void NPairMultiClassLossLayer<Dtype>::LayerSetUp(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  // LossLayer's default weighs a single top; the monitors must weigh 0, and
  // Layer::SetLossWeights wants one weight per top once any is given.
  if (this->layer_param_.loss_weight_size() == 0) {
    this->layer_param_.add_loss_weight(Dtype(1));
    for (int i = 1; i < top.size(); ++i) {
      this->layer_param_.add_loss_weight(Dtype(0));
    }
  }
  CheckNPairLossParameter(this->layer_param_.npair_loss_param(), type());
}

template <typename Dtype>
void NPairMultiClassLossLayer<Dtype>::Reshape(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  const int num = bottom[0]->shape(0);
  CHECK(bottom[1]->num_axes() >= 1 && bottom[1]->shape(0) == num &&
        bottom[1]->count() == num) << type() << " Layer: bottom[1] must hold "
      "exactly one label per sample, with the batch size N = " << num
      << " as its first axis; got shape " << bottom[1]->shape_string();
  LossLayer<Dtype>::Reshape(bottom, top);
  const vector<int> scalar(0);
  for (int i = 1; i < top.size(); ++i) {
    top[i]->Reshape(scalar);
  }
  vector<int> pairs_shape(2, num);
  sim_.Reshape(pairs_shape);
  pair_weight_.Reshape(pairs_shape);
  pair_scratch_.Reshape(pairs_shape);
  const vector<int> rows_shape(1, num);
  pos_threshold_.Reshape(rows_shape);
  neg_threshold_.Reshape(rows_shape);
  mined_.resize(num);
}

template <typename Dtype>
void NPairMultiClassLossLayer<Dtype>::Similarity_cpu(
    const Blob<Dtype>& features) {
  const int num = features.shape(0);
  const int dim = features.count(1);
  Dtype* sim = sim_.mutable_cpu_data();
  caffe_cpu_gemm<Dtype>(CblasNoTrans, CblasTrans, num, num, dim, Dtype(1),
      features.cpu_data(), features.cpu_data(), Dtype(0), sim);
  // gemm need not round S_ij and S_ji alike, but the GLOBAL lists hold both
  // and must see one value; mirror the upper triangle (syrk gives this).
  for (int i = 0; i < num; ++i) {
    for (int j = 0; j < i; ++j) {
      sim[i * num + j] = sim[j * num + i];
    }
  }
}

template <typename Dtype>
int NPairMultiClassLossLayer<Dtype>::GatherPairs(const Dtype* labels,
    const int row_begin, const int row_end, const bool same_label,
    Dtype* out) const {
  const int num = sim_.shape(0);
  const Dtype* sim = sim_.cpu_data();
  int n = 0;
  for (int i = row_begin; i < row_end; ++i) {
    for (int j = 0; j < num; ++j) {
      if (j != i && (labels[j] == labels[i]) == same_label) {
        out[n++] = sim[i * num + j];
      }
    }
  }
  return n;
}

template <typename Dtype>
Dtype NPairMultiClassLossLayer<Dtype>::ThresholdOfRows(const Dtype* labels,
    const int row_begin, const int row_end, const bool positives,
    const NPairMiningMethod method, const float sn) {
  const bool relative = NPairIsRelative(method);
  // RELATIVE_* rank the pairs of their own kind; HARD and EASY bound one kind
  // by the extreme of the other: positives by the most similar negative,
  // negatives by the least similar positive.
  Dtype* list = pair_scratch_.mutable_cpu_data();
  const int n = GatherPairs(labels, row_begin, row_end,
                            relative == positives, list);
  if (n == 0) {
    return (positives ? -1 : 1) * std::numeric_limits<Dtype>::infinity();
  }
  if (relative) {
    // Selection, not a sort: only the one rank is needed.
    Dtype* nth = list + NPairRelativePosition(n, sn);
    std::nth_element(list, nth, list + n);
    return *nth;
  }
  return positives ? *std::max_element(list, list + n)
                   : *std::min_element(list, list + n);
}

template <typename Dtype>
void NPairMultiClassLossLayer<Dtype>::Thresholds_cpu(const Dtype* labels,
    const bool positives, const NPairLossParameter_MiningRegion region,
    const NPairMiningMethod method, const float sn, Dtype* threshold) {
  if (method == NPairLossParameter_MiningMethod_RAND) {
    return;  // RAND keeps every pair and compares with nothing.
  }
  const int num = sim_.shape(0);
  if (region == NPairLossParameter_MiningRegion_GLOBAL) {
    std::fill(threshold, threshold + num,
              ThresholdOfRows(labels, 0, num, positives, method, sn));
    return;
  }
  for (int i = 0; i < num; ++i) {
    threshold[i] = ThresholdOfRows(labels, i, i + 1, positives, method, sn);
  }
}

template <typename Dtype>
int NPairMultiClassLossLayer<Dtype>::MineRow(const int i, const Dtype* labels,
    int* mined) const {
  const NPairLossParameter& param = this->layer_param_.npair_loss_param();
  const int num = sim_.shape(0);
  const Dtype* sim = sim_.cpu_data() + i * num;
  const double pos_threshold = pos_threshold_.cpu_data()[i];
  const double neg_threshold = neg_threshold_.cpu_data()[i];
  int n = 0;
  for (int j = 0; j < num; ++j) {
    if (j == i) { continue; }
    const bool kept = (labels[j] == labels[i]) ?
        NPairKeepPositive(param.ap_mining_method(), sim[j], pos_threshold,
                          param.margin_ident()) :
        NPairKeepNegative(param.an_mining_method(), sim[j], neg_threshold,
                          param.margin_diff());
    if (kept) { mined[n++] = j; }
  }
  return n;
}

template <typename Dtype>
Dtype NPairMultiClassLossLayer<Dtype>::LossAndPairWeights_cpu(
    const Dtype* labels) {
  const int num = sim_.shape(0);
  const Dtype* sim = sim_.cpu_data();
  Dtype* weight = pair_weight_.mutable_cpu_data();
  caffe_set(pair_weight_.count(), Dtype(0), weight);
  int* mined = mined_.data();
  // Accumulated in double: l_i is a difference of two log-sum-exps that can
  // be much larger than it, and the weights a difference of two softmaxes.
  double loss = 0;
  for (int i = 0; i < num; ++i) {
    const Dtype* s = sim + i * num;
    const int n = MineRow(i, labels, mined);
    // Each log-sum-exp is shifted by the maximum over its own set.
    double max_all = -HUGE_VAL, max_pos = -HUGE_VAL;
    int num_pos = 0;
    for (int k = 0; k < n; ++k) {
      const int j = mined[k];
      max_all = std::max(max_all, static_cast<double>(s[j]));
      if (labels[j] == labels[i]) {
        max_pos = std::max(max_pos, static_cast<double>(s[j]));
        ++num_pos;
      }
    }
    if (num_pos == 0) { continue; }  // l_i = 0 and row i of G stays 0.
    double sum_all = 0, sum_pos = 0;
    for (int k = 0; k < n; ++k) {
      const int j = mined[k];
      sum_all += std::exp(s[j] - max_all);
      if (labels[j] == labels[i]) { sum_pos += std::exp(s[j] - max_pos); }
    }
    const double lse_all = max_all + std::log(sum_all);
    const double lse_pos = max_pos + std::log(sum_pos);
    loss += lse_all - lse_pos;
    for (int k = 0; k < n; ++k) {
      const int j = mined[k];
      const double w_pos =
          (labels[j] == labels[i]) ? std::exp(s[j] - lse_pos) : 0;
      weight[i * num + j] = std::exp(s[j] - lse_all) - w_pos;
    }
  }
  return loss / num;
}

template <typename Dtype>
void NPairMultiClassLossLayer<Dtype>::RecallAtK_cpu(const Dtype* labels,
    const vector<Blob<Dtype>*>& top) {
  const int num = sim_.shape(0);
  const Dtype* sim = sim_.cpu_data();
  const int num_k = top.size() - 2;  // The tops between loss and asum.
  int eligible = 0;
  int hits[sizeof(kRecallK) / sizeof(kRecallK[0])] = {0};
  for (int i = 0; i < num; ++i) {
    const Dtype* s = sim + i * num;
    bool has_positive = false;
    Dtype best_positive = 0;
    for (int j = 0; j < num; ++j) {
      if (j != i && labels[j] == labels[i] &&
          (!has_positive || s[j] > best_positive)) {
        best_positive = s[j];
        has_positive = true;
      }
    }
    if (!has_positive) { continue; }
    ++eligible;
    // A negative tied with the best positive ranks ahead of it, so collapsed
    // embeddings score low rather than perfect.
    int ahead = 0;
    for (int j = 0; j < num; ++j) {
      if (labels[j] != labels[i] && s[j] >= best_positive) { ++ahead; }
    }
    for (int k = 0; k < num_k; ++k) {
      if (ahead < kRecallK[k]) { ++hits[k]; }
    }
  }
  for (int k = 0; k < num_k; ++k) {
    top[1 + k]->mutable_cpu_data()[0] =
        eligible ? Dtype(hits[k]) / eligible : Dtype(0);
  }
}

template <typename Dtype>
void NPairMultiClassLossLayer<Dtype>::Forward_cpu(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  const NPairLossParameter& param = this->layer_param_.npair_loss_param();
  const Dtype* features = bottom[0]->cpu_data();
  const Dtype* labels = bottom[1]->cpu_data();
  Similarity_cpu(*bottom[0]);
  Thresholds_cpu(labels, true, param.ap_mining_region(),
      param.ap_mining_method(), param.identsn(),
      pos_threshold_.mutable_cpu_data());
  Thresholds_cpu(labels, false, param.an_mining_region(),
      param.an_mining_method(), param.diffsn(),
      neg_threshold_.mutable_cpu_data());
  top[0]->mutable_cpu_data()[0] = LossAndPairWeights_cpu(labels);
  if (top.size() > 1) {
    RecallAtK_cpu(labels, top);
    top.back()->mutable_cpu_data()[0] =
        caffe_cpu_asum(bottom[0]->count(), features) / bottom[0]->shape(0);
  }
}

template <typename Dtype>
void NPairMultiClassLossLayer<Dtype>::Backward_cpu(
    const vector<Blob<Dtype>*>& top, const vector<bool>& propagate_down,
    const vector<Blob<Dtype>*>& bottom) {
  CHECK(!propagate_down[1]) << type()
      << " Layer cannot backpropagate to label inputs (bottom[1]).";
  if (!propagate_down[0]) { return; }
  const int num = bottom[0]->shape(0);
  const int dim = bottom[0]->count(1);
  // Only the loss is differentiable: the monitors' weights are ignored.
  const Dtype alpha = top[0]->cpu_diff()[0] / num;
  const Dtype* weight = pair_weight_.cpu_data();
  const Dtype* features = bottom[0]->cpu_data();
  Dtype* diff = bottom[0]->mutable_cpu_diff();
  // (G + G^T) X as two products, sparing a buffer for G + G^T.
  caffe_cpu_gemm<Dtype>(CblasNoTrans, CblasNoTrans, num, dim, num, alpha,
      weight, features, Dtype(0), diff);
  caffe_cpu_gemm<Dtype>(CblasTrans, CblasNoTrans, num, dim, num, alpha,
      weight, features, Dtype(1), diff);
}

#ifdef CPU_ONLY
STUB_GPU(NPairMultiClassLossLayer);
#endif

INSTANTIATE_CLASS(NPairMultiClassLossLayer);
REGISTER_LAYER_CLASS(NPairMultiClassLoss);

}  // namespace caffe
