#ifndef CAFFE_NPAIR_MULTICLASS_LOSS_LAYER_HPP_
#define CAFFE_NPAIR_MULTICLASS_LOSS_LAYER_HPP_

#include <vector>

#include "caffe/blob.hpp"
#include "caffe/layer.hpp"
#include "caffe/proto/caffe.pb.h"

#include "caffe/layers/loss_layer.hpp"
#include "caffe/util/npair_miner.hpp"
#include "caffe/util/npair_positive_index.hpp"

namespace caffe {

/**
 * @brief Computes the multi-class N-pair loss (Sohn, "Improved Deep Metric
 *        Learning with Multi-class N-pair Loss Objective", NIPS 2016) over
 *        every sample of the batch as a query, with optional pair mining,
 *        against the other samples of the batch and, optionally, a set of
 *        reference samples (a CrossBatchMemory's, or another device's).
 *
 * Query i's candidates are the other samples of the batch and every
 * reference. With @f$ s_{ic} @f$ the raw inner product of query i's feature
 * row with candidate c's (normalise upstream, e.g. with an L2Normalize
 * layer), @f$ P(i) @f$ the candidates with the label of sample i and
 * @f$ N(i) @f$ those with another label, mining keeps
 * @f$ \hat P(i) \subseteq P(i) @f$ and @f$ \hat N(i) \subseteq N(i) @f$, and
 * @f[
 *   E = \frac{1}{N} \sum_{i=1}^{N} \left(
 *       \log \sum_{c \in \hat P(i) \cup \hat N(i)} e^{s_{ic}}
 *     - \log \sum_{c \in \hat P(i)} e^{s_{ic}} \right),
 * @f]
 * a query with @f$ \hat P(i) = \emptyset @f$ contributing 0. Both sums are
 * evaluated as shifted log-sum-exps, so E is finite for any finite s.
 *
 * Mining (npair_loss_param; caffe/util/npair_miner.hpp) compares each pair's
 * similarity with a per-query threshold plus a margin:
 *  - HARD / EASY: positives against the most similar negative, negatives
 *    against the least similar positive, of the query (LOCAL) or of every
 *    query (GLOBAL); HARD keeps the pairs on the wrong side, EASY the others;
 *  - RELATIVE_HARD / RELATIVE_EASY: against the entry of the ascending list
 *    of the pair's own kind selected by identsn / diffsn (SN >= 0: counted
 *    from the most similar end; SN < 0: as a fraction -SN of the list);
 *  - RAND: every pair (the name is kept for compatibility).
 * GLOBAL lists count a pair of two batch samples both ways, (i, j) and
 * (j, i), and a pair with a reference once. Selection is a constant of the
 * step: no gradient flows through thresholds.
 *
 * @param bottom input Blob vector (length 2, or 4 with references)
 *   -# @f$ (N \times \ldots) @f$
 *      the features X, read as an @f$ N \times D @f$ matrix
 *      (D = count / N), @f$ x \in [-\infty, +\infty] @f$
 *   -# @f$ (N) @f$, @f$ (N \times 1) @f$, ...: exactly N labels, compared for
 *      equality as stored (a NaN label equals no label); never given a
 *      gradient
 *   -# @f$ (M \times \ldots) @f$, optional: the reference features R,
 *      @f$ M \ge 0 @f$ rows of the same D; candidates of every query, never
 *      queries themselves. Their gradient, when Backward is asked for it, is
 *      that of the loss through the references' end of each pair, so that a
 *      layer that brought them from elsewhere can send it home.
 *   -# @f$ (M) @f$, ...: exactly M reference labels (with bottom 2 only);
 *      never given a gradient: asked for one (a reference layer that passes
 *      gradients back asks), the layer leaves their diff alone
 * @param top output Blob vector (length 1 to 5), every top a scalar:
 *   | tops | contents                                       |
 *   | ---- | ---------------------------------------------- |
 *   | 1    | loss                                           |
 *   | 2    | loss, feature_asum                             |
 *   | 3    | loss, R\@1, feature_asum                       |
 *   | 4    | loss, R\@1, R\@5, feature_asum                 |
 *   | 5    | loss, R\@1, R\@5, R\@10, feature_asum          |
 *   - loss: @f$ E @f$ above, the only differentiable top;
 *   - R\@K: the fraction, over queries with at least one positive candidate,
 *     of those with fewer than K negative candidates at least as similar as
 *     their most similar positive (0 when no query has a positive);
 *   - feature_asum: @f$ \frac{1}{N} \sum |X| @f$, the mean L1 norm of a
 *     batch row (references not included).
 *   With no loss_weight given, the loss weighs 1 and the monitors 0. Weights
 *   given on the monitors only change what the solver reports, never the
 *   gradient.
 *
 * With M = 0 references the layer computes what it computes with two
 * bottoms, to the bit.
 */
template <typename Dtype>
class NPairMultiClassLossLayer : public LossLayer<Dtype> {
 public:
  explicit NPairMultiClassLossLayer(const LayerParameter& param)
      : LossLayer<Dtype>(param) {}
  virtual void LayerSetUp(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Reshape(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);

  virtual inline const char* type() const { return "NPairMultiClassLoss"; }
  virtual inline int ExactNumBottomBlobs() const { return -1; }
  virtual inline int MinBottomBlobs() const { return 2; }
  virtual inline int MaxBottomBlobs() const { return 4; }
  virtual inline int ExactNumTopBlobs() const { return -1; }
  virtual inline int MinTopBlobs() const { return 1; }
  virtual inline int MaxTopBlobs() const { return 5; }
  /// The features get a gradient, and so do the references; labels never.
  virtual inline bool AllowForceBackward(const int bottom_index) const {
    return bottom_index == 0 || bottom_index == 2;
  }

 protected:
  /// @copydoc NPairMultiClassLossLayer
  virtual void Forward_cpu(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Forward_gpu(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);

  /**
   * @brief Computes the gradients through
   *        @f$ \frac{\partial E}{\partial s_{ic}} = G_{ic} @f$, with
   *        @f$ G_{ic} = \frac{g}{N} (w_{ic} - w^+_{ic}) @f$ for mined pairs
   *        (0 elsewhere), where @f$ w_{ic} @f$ and @f$ w^+_{ic} @f$ are the
   *        softmax weights of @f$ s_{ic} @f$ in the two sums of the loss and
   *        g is top[0]'s diff (the loss weight):
   *        @f$ \frac{\partial E}{\partial X} = (G_B + G_B^\top) X + G_R R @f$
   *        and @f$ \frac{\partial E}{\partial R} = G_R^\top X @f$, with
   *        @f$ G_B @f$ the columns of the batch and @f$ G_R @f$ those of the
   *        references.
   *
   * Only top[0]'s diff is read. Fails if asked for the batch's labels'
   * gradient; never writes the reference labels' diff.
   */
  virtual void Backward_cpu(const vector<Blob<Dtype>*>& top,
      const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom);
  virtual void Backward_gpu(const vector<Blob<Dtype>*>& top,
      const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom);

  /// g / N, the factor of both Backwards, from top[0]'s diff alone (the
  /// monitors' weights never reach the gradient); fails if the batch's
  /// labels' gradient is asked for.
  Dtype GradientScale(const vector<Blob<Dtype>*>& top,
      const vector<bool>& propagate_down) const;

  // The steps of Forward_cpu, in order; each reads what the previous wrote.
  // Each splits its O(N C) work over the OpenMP threads and gives the same
  // result for any number of them. (Forward_gpu makes the same steps with
  // the device passes of caffe/util/npair_gpu_passes.hpp.)

  /// sim_ = [X X^T | X R^T], its batch block exactly symmetric; and the
  /// candidates' labels [y | z].
  void Similarity_cpu(const vector<Blob<Dtype>*>& bottom);
  /// What the miner and the passes read of sim_.
  NPairSimilarities<Dtype> Similarities_cpu() const;
  /// Returns the loss; fills pair_weight_ with G / (g / N) and, when the
  /// tops hold R@K, ahead_ with each query's Recall@K count.
  Dtype LossAndPairWeights_cpu(bool recall);
  /// Writes R@1, R@5, R@10 into the tops between the loss and feature_asum.
  void WriteRecall(const vector<Blob<Dtype>*>& top) const;

  // N queries, M references, C = N + M candidates, D values a row.
  int num_, num_refs_, count_, dim_;
  int ld_;  ///< the distance between the rows of sim_ and pair_weight_

  shared_ptr<NPairMiner<Dtype> > miner_;
  NPairPositiveIndex positives_;
  Blob<Dtype> candidate_labels_;  ///< C: the batch's labels, the references'
  // Two N x C buffers: the similarities (whose first N x N become
  // G_B + G_B^T in Backward) and the pair weights that Backward needs.
  Blob<Dtype> sim_;
  Blob<Dtype> pair_weight_;
  vector<double> row_loss_;  ///< N: l_i, added up in row order
  vector<int> ahead_;        ///< N: the Recall@K count, -1 if not eligible

  // The per-query values of Forward_gpu, on the device, sized in Reshape;
  // a Blob allocates on first use, so the CPU path never pays for them.
  Blob<double> gpu_row_loss_;     ///< N: l_i
  Blob<double> gpu_row_asum_;     ///< N: the L1 norm of each feature row
  Blob<int> gpu_recall_ahead_;    ///< N: as ahead_
};

}  // namespace caffe

#endif  // CAFFE_NPAIR_MULTICLASS_LOSS_LAYER_HPP_
