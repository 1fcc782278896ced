#include <algorithm>
#include <vector>

#include "caffe/layers/cross_batch_memory_layer.hpp"
#include "caffe/util/math_functions.hpp"

namespace caffe {

namespace {

// The largest count the layer keeps as a Dtype in its counters blob: every
// integer up to it is a float.
const int kLargestCount = 1 << 24;

template <typename Dtype>
const Dtype* DataOf(const Blob<Dtype>& blob, const bool gpu) {
  return gpu ? blob.gpu_data() : blob.cpu_data();
}
template <typename Dtype>
Dtype* MutableDataOf(Blob<Dtype>* blob, const bool gpu) {
  return gpu ? blob->mutable_gpu_data() : blob->mutable_cpu_data();
}

}  // namespace

template <typename Dtype>
void CrossBatchMemoryLayer<Dtype>::LayerSetUp(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  const CrossBatchMemoryParameter& param =
      this->layer_param_.cross_batch_memory_param();
  CHECK(param.has_size() && param.size() >= 1) << type() << " Layer: "
      "cross_batch_memory_param.size, how many samples the memory holds, "
      "must be given and at least 1; got " << param.size();
  CHECK_LE(param.size(), kLargestCount) << type() << " Layer: "
      "cross_batch_memory_param.size must be at most " << kLargestCount;
  CHECK_LE(param.warmup(), kLargestCount) << type() << " Layer: "
      "cross_batch_memory_param.warmup must be at most " << kLargestCount;
  CHECK(bottom[0]->num_axes() >= 1 && bottom[0]->count(1) > 0) << type()
      << " Layer: bottom[0] (the features) must hold rows of at least one "
      "value; got shape " << bottom[0]->shape_string();
  row_count_ = bottom[0]->count(1);
  if (this->blobs_.empty()) {
    vector<int> rows_shape = bottom[0]->shape();
    rows_shape[0] = param.size();
    this->blobs_.resize(3);
    this->blobs_[0].reset(new Blob<Dtype>(rows_shape));
    this->blobs_[1].reset(new Blob<Dtype>(vector<int>(1, param.size())));
    this->blobs_[2].reset(new Blob<Dtype>(vector<int>(1, kCounters)));
    for (int b = 0; b < 3; ++b) {
      caffe_set(this->blobs_[b]->count(), Dtype(0),
                this->blobs_[b]->mutable_cpu_data());
    }
  } else {
    LOG(INFO) << "Skipping parameter initialization";
  }
  // The blobs are the memory, not weights: the solver must leave them as
  // they are (no learning rate, no weight decay), as BatchNorm keeps its
  // statistics.
  for (int b = 0; b < this->blobs_.size(); ++b) {
    if (this->layer_param_.param_size() == b) {
      ParamSpec* spec = this->layer_param_.add_param();
      spec->set_lr_mult(0);
      spec->set_decay_mult(0);
    } else {
      const ParamSpec& spec = this->layer_param_.param(b);
      CHECK(spec.lr_mult() == 0 && spec.decay_mult() == 0) << type()
          << " Layer: its blobs are the memory, which the solver must not "
          "change: a param of this layer needs lr_mult: 0 and decay_mult: 0 "
          "(or leave param out)";
    }
  }
  // Tops sized for a full memory once, so that they have memory even while
  // they hold no row: reading an empty blob that never held one fails.
  top[0]->ReshapeLike(*this->blobs_[0]);
  top[1]->ReshapeLike(*this->blobs_[1]);
}

template <typename Dtype>
int CrossBatchMemoryLayer<Dtype>::RowsHandedOut() const {
  const int warmup = this->layer_param_.cross_batch_memory_param().warmup();
  return this->phase_ == TRAIN && counter(kWarmupPasses) >= warmup ?
      counter(kRowsStored) : 0;
}

template <typename Dtype>
void CrossBatchMemoryLayer<Dtype>::Reshape(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  const int num = bottom[0]->num_axes() >= 1 ? bottom[0]->shape(0) : 0;
  CHECK(bottom[0]->num_axes() == this->blobs_[0]->num_axes() &&
        bottom[0]->count(1) == row_count_) << type() << " Layer: bottom[0] "
      "must hold rows of the shape the memory was made for (" <<
      this->blobs_[0]->shape_string() << " holds " << row_count_ << " values "
      "a row); got shape " << bottom[0]->shape_string();
  CHECK(bottom[1]->num_axes() >= 1 && bottom[1]->shape(0) == num &&
        bottom[1]->count() == num) << type() << " Layer: bottom[1] must hold "
      "exactly one label per sample, with the batch size N = " << num
      << " as its first axis; got shape " << bottom[1]->shape_string();
  vector<int> shape = this->blobs_[0]->shape();
  shape[0] = RowsHandedOut();
  top[0]->Reshape(shape);
  top[1]->Reshape(vector<int>(1, shape[0]));
}

template <typename Dtype>
void CrossBatchMemoryLayer<Dtype>::Pass(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top, const bool gpu) {
  const int handed = top[1]->count();
  if (handed > 0) {
    caffe_copy(handed * row_count_, DataOf(*this->blobs_[0], gpu),
               MutableDataOf(top[0], gpu));
    caffe_copy(handed, DataOf(*this->blobs_[1], gpu),
               MutableDataOf(top[1], gpu));
  }
  if (this->phase_ != TRAIN) { return; }
  Dtype* counters = this->blobs_[2]->mutable_cpu_data();
  if (counter(kWarmupPasses) <
      this->layer_param_.cross_batch_memory_param().warmup()) {
    counters[kWarmupPasses] += 1;
    return;
  }
  // The batch's rows in place of the oldest, wrapping around the end; of a
  // batch larger than the memory, only its last `size` rows stay.
  const int size = this->blobs_[1]->count();
  const int num = bottom[0]->shape(0);
  Dtype* rows = MutableDataOf(this->blobs_[0].get(), gpu);
  Dtype* labels = MutableDataOf(this->blobs_[1].get(), gpu);
  const Dtype* batch_rows = DataOf(*bottom[0], gpu);
  const Dtype* batch_labels = DataOf(*bottom[1], gpu);
  int next = counter(kNextRow);
  for (int i = std::max(0, num - size); i < num; ) {
    const int run = std::min(num - i, size - next);
    caffe_copy(run * row_count_, batch_rows + i * row_count_,
               rows + next * row_count_);
    caffe_copy(run, batch_labels + i, labels + next);
    i += run;
    next = (next + run) % size;
  }
  counters[kNextRow] = next;
  counters[kRowsStored] = std::min(size, counter(kRowsStored) + num);
}

template <typename Dtype>
void CrossBatchMemoryLayer<Dtype>::Forward_cpu(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  Pass(bottom, top, false);
}

template <typename Dtype>
void CrossBatchMemoryLayer<Dtype>::Backward_cpu(
    const vector<Blob<Dtype>*>& top, const vector<bool>& propagate_down,
    const vector<Blob<Dtype>*>& bottom) {
  for (int b = 0; b < 2; ++b) {
    if (propagate_down[b] && bottom[b]->count() > 0) {
      caffe_set(bottom[b]->count(), Dtype(0), bottom[b]->mutable_cpu_diff());
    }
  }
}

#ifdef CPU_ONLY
STUB_GPU(CrossBatchMemoryLayer);
#endif

INSTANTIATE_CLASS(CrossBatchMemoryLayer);
REGISTER_LAYER_CLASS(CrossBatchMemory);

}  // namespace caffe
