#ifndef CAFFE_CROSS_BATCH_MEMORY_LAYER_HPP_
#define CAFFE_CROSS_BATCH_MEMORY_LAYER_HPP_

#include <vector>

#include "caffe/blob.hpp"
#include "caffe/layer.hpp"
#include "caffe/proto/caffe.pb.h"

namespace caffe {

/**
 * @brief A first-in-first-out memory of the features and labels of the last
 *        `size` training samples, handed out as references to a loss that
 *        takes them (NPairMultiClassLoss's bottoms 2 and 3): a cross-batch
 *        memory (Wang et al., "Cross-Batch Memory for Embedding Learning",
 *        CVPR 2020), so that every query meets more negatives than its own
 *        batch holds.
 *
 * Each TRAIN forward pass, once the warm-up is over, first copies the rows
 * the memory holds to the tops, then stores the current batch in place of
 * the oldest rows: a batch is never its own reference. The first `warmup`
 * TRAIN forward passes neither store nor hand out anything (the tops are
 * empty), so the memory never holds the features of the first,
 * fastest-changing steps; from then on its tops grow by a batch a pass until
 * the memory is full, `size` / N passes later. Features are stored as they
 * come (the net's gradient never reaches them: the memory is a constant of
 * each step), and nothing flows back through the layer.
 *
 * In the TEST phase the memory neither grows nor is used: its tops are
 * empty, so a TEST net's loss is its batch's alone. (A TEST net shares the
 * TRAIN net's memory, as every layer with blobs shares them.)
 *
 * The rows, their labels and the layer's counters are its three blobs, which
 * the layer keeps out of the solver's hands (lr_mult and decay_mult 0), so a
 * snapshot holds the memory and a run resumed from it continues as the
 * uninterrupted run would. Under `caffe train -gpu all` each solver's net has
 * a memory of its own, of its own device's batches.
 *
 * @param bottom input Blob vector (length 2)
 *   -# @f$ (N \times \ldots) @f$ the features of the batch, N rows of the
 *      trailing shape the first batch had
 *   -# @f$ (N) @f$, @f$ (N \times 1) @f$, ...: exactly N labels
 * @param top output Blob vector (length 2)
 *   -# @f$ (M' \times \ldots) @f$ the stored features, M' rows in the order
 *      they are kept (0 <= M' <= size; 0 during the warm-up and in TEST)
 *   -# @f$ (M') @f$ their labels
 *
 * cross_batch_memory_param: `size` (required, >= 1) rows; `warmup` (default
 * 1000) TRAIN forward passes before the memory starts to fill (solver
 * iterations times iter_size).
 */
template <typename Dtype>
class CrossBatchMemoryLayer : public Layer<Dtype> {
 public:
  explicit CrossBatchMemoryLayer(const LayerParameter& param)
      : Layer<Dtype>(param) {}
  virtual void LayerSetUp(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Reshape(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);

  virtual inline const char* type() const { return "CrossBatchMemory"; }
  virtual inline int ExactNumBottomBlobs() const { return 2; }
  virtual inline int ExactNumTopBlobs() const { return 2; }
  /// Nothing flows back through the memory.
  virtual inline bool AllowForceBackward(const int bottom_index) const {
    return false;
  }

 protected:
  virtual void Forward_cpu(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Forward_gpu(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  /// The memory contributes no gradient: a features' diff asked for is 0.
  virtual void Backward_cpu(const vector<Blob<Dtype>*>& top,
      const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom);
  virtual void Backward_gpu(const vector<Blob<Dtype>*>& top,
      const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom);

  /// How many rows the tops hold this pass: what is stored, once the
  /// warm-up is over and in TRAIN; else none.
  int RowsHandedOut() const;
  /// One forward pass, on the CPU's or the GPU's copies of the blobs (by
  /// `gpu`): the stored rows to the tops, then, in TRAIN, a warm-up pass
  /// counted or the batch stored in place of the oldest rows.
  void Pass(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top, bool gpu);

  // blobs_[0]: size rows of the features' trailing shape; blobs_[1]: size
  // labels; blobs_[2]: the counters below, as Dtype (exact: Dtype holds
  // every integer up to size and warmup, which LayerSetUp bounds).
  enum Counter { kWarmupPasses, kNextRow, kRowsStored, kCounters };
  int counter(const Counter c) const {
    return static_cast<int>(this->blobs_[2]->cpu_data()[c]);
  }
  int row_count_;  ///< the values of one stored row
};

}  // namespace caffe

#endif  // CAFFE_CROSS_BATCH_MEMORY_LAYER_HPP_
