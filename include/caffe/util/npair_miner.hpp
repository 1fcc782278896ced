#ifndef CAFFE_UTIL_NPAIR_MINER_HPP_
#define CAFFE_UTIL_NPAIR_MINER_HPP_

#include <string>

#include "caffe/blob.hpp"
#include "caffe/proto/caffe.pb.h"
#include "caffe/syncedmem.hpp"
#include "caffe/util/npair_mining_rules.hpp"
#include "caffe/util/npair_positive_index.hpp"

namespace caffe {

/**
 * @brief The similarities of N queries to their C candidates: the N queries
 *        themselves first (column i is query i, never its own pair), then
 *        the references. Row-major N x C, rows ld apart.
 */
template <typename Dtype>
struct NPairSimilarities {
  int num;               ///< N: queries
  int count;             ///< C = N + M: candidates
  int ld;                ///< the distance between rows, >= count
  const Dtype* data;     ///< S_ic
  const Dtype* labels;   ///< the C candidates' labels (the queries' first)

  NPAIR_HOST_DEVICE const Dtype* row(const int i) const {
    return data + static_cast<size_t>(i) * ld;
  }
};

/// The similarities that mining keeps for each kind of pair of one query:
/// a positive s is kept when lo_pos <= s <= hi_pos, a negative when
/// lo_neg <= s <= hi_neg. RAND keeps [-inf, inf]; a NaN threshold gives NaN
/// bounds, which keep nothing.
template <typename Dtype>
struct NPairKeptBounds {
  Dtype lo_pos, hi_pos, lo_neg, hi_neg;
};

/**
 * @brief The mining of the N-pair loss (docs/layer_contract.md §3): each
 *        query's thresholds t+_i and t-_i, and from them the similarities
 *        its positives and negatives must have to be kept.
 *
 * A loss asks the miner which pairs to use and never changes it; a second
 * loss over the same candidates reuses it as it is. The rules themselves (the
 * positions of RELATIVE_* thresholds, which side of t + m is kept) are
 * caffe/util/npair_mining_rules.hpp's, shared with the CUDA kernels.
 *
 * Thresholds from positives (HARD / EASY t-, RELATIVE_* t+) are read off the
 * positive pairs alone; thresholds from negatives (HARD / EASY t+, RELATIVE_*
 * t-) sweep the rows. LOCAL takes them over a query's own candidates, GLOBAL
 * over every (query, candidate) pair: a pair of two queries counts as (i, j)
 * and (j, i), a pair with a reference once. An empty list gives -inf (t+) or
 * +inf (t-), and a RELATIVE_* list holding a NaN a NaN threshold.
 *
 * Mine_cpu splits its row work over the OpenMP threads and gives the same
 * thresholds for any number of them.
 */
template <typename Dtype>
class NPairMiner {
 public:
  /// Fails, naming layer_type, unless every margin and sn is finite: a NaN
  /// left in an unused field today becomes a silent NaN loss when someone
  /// switches the method tomorrow.
  NPairMiner(const NPairLossParameter& param, const std::string& layer_type);

  /// Sizes the thresholds for N queries and the lists of a RELATIVE_*
  /// method for C candidates each (memory is taken on first use only).
  void Reshape(int num, int count);

  /// t+_i and t-_i of every query, on the CPU.
  void Mine_cpu(const NPairSimilarities<Dtype>& sim,
      const NPairPositiveIndex& positives);
#ifndef CPU_ONLY
  /// The same on the GPU, from device memory (sim.data and sim.labels).
  void Mine_gpu(const NPairSimilarities<Dtype>& sim);
#endif

  /// What query i keeps (after Mine_cpu).
  NPairKeptBounds<Dtype> KeptBounds_cpu(int i) const;

  const NPairLossParameter& param() const { return param_; }
  const Blob<Dtype>& pos_threshold() const { return pos_threshold_; }
  const Blob<Dtype>& neg_threshold() const { return neg_threshold_; }

 private:
  void ThresholdOfPositives_cpu(const NPairSimilarities<Dtype>& sim,
      const NPairPositiveIndex& positives, Dtype* threshold);
  void ThresholdOfNegatives_cpu(const NPairSimilarities<Dtype>& sim,
      const NPairPositiveIndex& positives, Dtype* threshold);

  const NPairLossParameter param_;
  Blob<Dtype> pos_threshold_;  ///< N: t+_i (unused for RAND)
  Blob<Dtype> neg_threshold_;  ///< N: t-_i (unused for RAND)
  Blob<Dtype> lists_;          ///< N x C, CPU: a RELATIVE_* method's lists
  /// GPU: an NPairRadixState, where a GLOBAL RELATIVE_* select keeps its
  /// passes (of one size: allocated on first use)
  SyncedMemory radix_state_;
};

/**
 * @brief The similarities a rule keeps for a pair of one kind (positive or
 *        not) of a query with threshold t and margin m, as the interval
 *        [lo, hi] of Dtype values.
 *
 * The rule is npair_mining_rules.hpp's, read off it at a point below, at and
 * above b = t + m; each way it can compare s with b in double is then an
 * exact Dtype bound: s < b is s <= pred(up(b)), s <= b is s <= down(b),
 * s > b is s >= succ(down(b)) and s >= b is s >= up(b), with up and down the
 * roundings of b to Dtype toward +inf and -inf. RAND keeps every finite s.
 * A NaN b (a NaN threshold) keeps nothing.
 */
template <typename Dtype>
void NPairKeptRange(bool positive, NPairMiningMethod method, double t,
    double m, Dtype* lo, Dtype* hi);

}  // namespace caffe

#endif  // CAFFE_UTIL_NPAIR_MINER_HPP_
