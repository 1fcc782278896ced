#ifndef CAFFE_NPAIR_MULTICLASS_LOSS_LAYER_HPP_
#define CAFFE_NPAIR_MULTICLASS_LOSS_LAYER_HPP_

#include <vector>

#include "caffe/blob.hpp"
#include "caffe/layer.hpp"
#include "caffe/proto/caffe.pb.h"

#include "caffe/layers/loss_layer.hpp"
#include "caffe/syncedmem.hpp"
#include "caffe/util/npair_radix_select.hpp"
#include "caffe/util/npair_selection.hpp"

namespace caffe {

/**
 * @brief Computes the multi-class N-pair loss (Sohn, "Improved Deep Metric
 *        Learning with Multi-class N-pair Loss Objective", NIPS 2016) over
 *        every sample of the batch as a query, with optional pair mining.
 *
 * With @f$ S = X X^\top @f$ the raw inner products of the feature rows
 * (normalise upstream, e.g. with an L2Normalize layer), @f$ P(i) @f$ the other
 * samples with the label of sample i and @f$ N(i) @f$ those with another label,
 * mining keeps @f$ \hat P(i) \subseteq P(i) @f$ and
 * @f$ \hat N(i) \subseteq N(i) @f$, and
 * @f[
 *   E = \frac{1}{N} \sum_{i=1}^{N} \left(
 *       \log \sum_{j \in \hat P(i) \cup \hat N(i)} e^{S_{ij}}
 *     - \log \sum_{j \in \hat P(i)} e^{S_{ij}} \right),
 * @f]
 * a query with @f$ \hat P(i) = \emptyset @f$ contributing 0. Both sums are
 * evaluated as shifted log-sum-exps, so E is finite for any finite S.
 *
 * Mining (npair_loss_param; rules in caffe/util/npair_selection.hpp) compares
 * each pair's similarity with a per-query threshold plus a margin:
 *  - HARD / EASY: positives against the most similar negative, negatives
 *    against the least similar positive, of the query (LOCAL) or of the
 *    batch (GLOBAL); HARD keeps the pairs on the wrong side, EASY the others;
 *  - RELATIVE_HARD / RELATIVE_EASY: against the entry of the ascending list
 *    of the pair's own kind selected by identsn / diffsn (SN >= 0: counted
 *    from the most similar end; SN < 0: as a fraction -SN of the list);
 *  - RAND: every pair (the name is kept for compatibility).
 * Selection is a constant of the step: no gradient flows through thresholds.
 *
 * @param bottom input Blob vector (length 2)
 *   -# @f$ (N \times \ldots) @f$
 *      the features X, read as an @f$ N \times D @f$ matrix
 *      (D = count / N), @f$ x \in [-\infty, +\infty] @f$
 *   -# @f$ (N) @f$, @f$ (N \times 1) @f$, ...: exactly N labels, compared for
 *      equality as stored; no gradient is ever computed for them
 * @param top output Blob vector (length 1 to 5), every top a scalar:
 *   | tops | contents                                       |
 *   | ---- | ---------------------------------------------- |
 *   | 1    | loss                                           |
 *   | 2    | loss, feature_asum                             |
 *   | 3    | loss, R\@1, feature_asum                       |
 *   | 4    | loss, R\@1, R\@5, feature_asum                 |
 *   | 5    | loss, R\@1, R\@5, R\@10, feature_asum          |
 *   - loss: @f$ E @f$ above, the only differentiable top;
 *   - R\@K: the fraction, over queries with at least one positive, of those
 *     with fewer than K negatives at least as similar as their most similar
 *     positive (0 when no query has a positive);
 *   - feature_asum: @f$ \frac{1}{N} \sum |X| @f$, the mean L1 norm of a row.
 *   With no loss_weight given, the loss weighs 1 and the monitors 0. Weights
 *   given on the monitors only change what the solver reports, never the
 *   gradient.
 */
template <typename Dtype>
class NPairMultiClassLossLayer : public LossLayer<Dtype> {
 public:
  explicit NPairMultiClassLossLayer(const LayerParameter& param)
      : LossLayer<Dtype>(param),
        gpu_radix_state_(sizeof(NPairRadixState)) {}
  virtual void LayerSetUp(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Reshape(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);

  virtual inline const char* type() const { return "NPairMultiClassLoss"; }
  virtual inline int ExactNumBottomBlobs() const { return 2; }
  virtual inline int ExactNumTopBlobs() const { return -1; }
  virtual inline int MinTopBlobs() const { return 1; }
  virtual inline int MaxTopBlobs() const { return 5; }
  /// The features get a gradient; the labels (bottom[1]) never do.
  virtual inline bool AllowForceBackward(const int bottom_index) const {
    return bottom_index != 1;
  }

 protected:
  /// @copydoc NPairMultiClassLossLayer
  virtual void Forward_cpu(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Forward_gpu(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);

  /**
   * @brief Computes @f$ \frac{\partial E}{\partial X} = (G + G^\top) X @f$
   *        with @f$ G_{ij} = \frac{g}{N} (w_{ij} - w^+_{ij}) @f$ for mined
   *        pairs (0 elsewhere), where @f$ w_{ij} @f$ and @f$ w^+_{ij} @f$ are
   *        the softmax weights of @f$ S_{ij} @f$ in the two sums of the loss
   *        and g is top[0]'s diff (the loss weight).
   *
   * Only top[0]'s diff is read. Fails if asked for the labels' gradient.
   */
  virtual void Backward_cpu(const vector<Blob<Dtype>*>& top,
      const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom);
  virtual void Backward_gpu(const vector<Blob<Dtype>*>& top,
      const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom);

  // The steps of Forward_cpu, in order; each reads what the previous wrote.
  // They work on CPU memory, so a GPU Forward may also use them for the
  // parts it leaves on the host. Each splits its O(N^2) work over the
  // OpenMP threads and gives the same result for any number of them.

  /// sim_ = X X^T, exactly symmetric.
  void Similarity_cpu(const Blob<Dtype>& features);
  /**
   * Fills threshold[i] for the positives (positives = true: ap_* and identsn)
   * or the negatives (an_* and diffsn) of every query; RAND leaves it alone.
   * -inf / +inf stand for an empty list (no pair of the kind to compare with).
   */
  void Thresholds_cpu(const Dtype* labels, const bool positives,
      const NPairLossParameter_MiningRegion region,
      const NPairMiningMethod method, const float sn, Dtype* threshold);
  /// Returns the loss and fills pair_weight_ with G / (g / N).
  Dtype LossAndPairWeights_cpu(const Dtype* labels);
  /// g / N, the factor of (G + G^T) X in both Backwards, from top[0]'s diff
  /// alone (the monitors' weights never reach the gradient); fails if the
  /// labels' gradient is asked for.
  Dtype GradientScale(const vector<Blob<Dtype>*>& top,
      const vector<bool>& propagate_down, const int num) const;
  /// Writes R@1, R@5, R@10 into the tops between the loss and feature_asum.
  void RecallAtK_cpu(const Dtype* labels, const vector<Blob<Dtype>*>& top);

  // Three N x N buffers: the similarities, the pair weights that Backward
  // needs, and a scratch that holds the similarity list a threshold is
  // selected from in Forward_cpu (a GLOBAL list holds up to N (N - 1)
  // ordered pairs) and G + G^T in Backward.
  Blob<Dtype> sim_;
  Blob<Dtype> pair_weight_;
  Blob<Dtype> pair_scratch_;
  Blob<Dtype> pos_threshold_;  ///< N: t+ of each query
  Blob<Dtype> neg_threshold_;  ///< N: t- of each query
  vector<double> row_loss_;    ///< N: l_i, added up in row order

  // The per-query scratch of Forward_gpu, typed and sized in Reshape (the
  // radix state has one size, set here at construction); Blobs and
  // SyncedMemory allocate on first use, so the CPU path never pays for them.
  Blob<double> gpu_row_loss_;      ///< N: l_i
  Blob<double> gpu_row_asum_;      ///< N: the L1 norm of each feature row
  /// N: for Recall@K, the negatives at least as similar as the query's best
  /// positive; -1 for a query without a positive
  Blob<int> gpu_recall_ahead_;
  /// An NPairRadixState: where a GLOBAL RELATIVE_* select keeps its passes
  SyncedMemory gpu_radix_state_;
};

}  // namespace caffe

#endif  // CAFFE_NPAIR_MULTICLASS_LOSS_LAYER_HPP_
