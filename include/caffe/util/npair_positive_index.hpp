#ifndef CAFFE_UTIL_NPAIR_POSITIVE_INDEX_HPP_
#define CAFFE_UTIL_NPAIR_POSITIVE_INDEX_HPP_

#include <stdint.h>

#include <vector>

namespace caffe {

/**
 * @brief Where each query's positives are among its candidates: the columns
 *        c != i whose label equals query i's (docs/layer_contract.md §3).
 *
 * The candidates of an N-pair step are C columns, the N queries first (column
 * i is query i itself, never its own pair) and then the references. Positives
 * are few (a class has a few samples in a batch), so the passes that need
 * only them (the smallest or best positive, a positive list's order
 * statistic, the count that makes a query eligible for Recall@K) read them
 * here instead of sweeping whole rows.
 *
 * Candidates that share a label form a group; a query's positives are its
 * group's columns but its own. A NaN label equals no label: its query has no
 * group, and its candidate is in none.
 */
class NPairPositiveIndex {
 public:
  /// Indexes C candidate labels, the first N of which are the queries'.
  template <typename Dtype>
  void Build(const Dtype* labels, int num, int count);

  /// The columns of query i's group, ascending, i itself included (a caller
  /// leaves it out); an empty range for a NaN-labelled query.
  const int* group_begin(const int i) const {
    return members_.data() + begin_of_group(i);
  }
  const int* group_end(const int i) const {
    return members_.data() + end_of_group(i);
  }
  /// |P(i)|: how many positives query i has.
  int num_positives(const int i) const {
    const int size = end_of_group(i) - begin_of_group(i);
    return size > 0 ? size - 1 : 0;
  }
  /// The number of (query, positive) pairs of the batch: sum of |P(i)|.
  int64_t total_positives() const { return total_positives_; }

 private:
  int begin_of_group(const int i) const {
    return group_of_query_[i] < 0 ? 0 : group_begin_[group_of_query_[i]];
  }
  int end_of_group(const int i) const {
    return group_of_query_[i] < 0 ? 0 : group_begin_[group_of_query_[i] + 1];
  }

  std::vector<int> group_of_query_;  ///< N: a group, or -1 (NaN label)
  std::vector<int> group_begin_;     ///< groups + 1: where each starts
  std::vector<int> members_;         ///< the grouped columns, by group
  int64_t total_positives_;
  // Build's work space, kept to avoid allocating each step.
  std::vector<int> order_, group_of_column_;
};

}  // namespace caffe

#endif  // CAFFE_UTIL_NPAIR_POSITIVE_INDEX_HPP_
