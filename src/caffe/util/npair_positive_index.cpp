#include <algorithm>
#include <cmath>
#include <vector>

#include "caffe/util/npair_positive_index.hpp"

namespace caffe {

template <typename Dtype>
void NPairPositiveIndex::Build(const Dtype* labels, const int num,
    const int count) {
  // Groups are the distinct labels of the queries, found by sorting them; a
  // reference whose label no query has can be nobody's positive.
  order_.clear();
  for (int i = 0; i < num; ++i) {
    if (!std::isnan(labels[i])) { order_.push_back(i); }
  }
  std::sort(order_.begin(), order_.end(), [labels](const int a, const int b) {
    return labels[a] < labels[b];
  });
  std::vector<Dtype> group_label;
  for (int k = 0; k < order_.size(); ++k) {
    const Dtype y = labels[order_[k]];
    if (group_label.empty() || group_label.back() != y) {
      group_label.push_back(y);
    }
  }
  const int groups = group_label.size();
  // Each column's group, by binary search among the queries' labels.
  group_of_column_.assign(count, -1);
  group_begin_.assign(groups + 1, 0);
  for (int c = 0; c < count; ++c) {
    const Dtype y = labels[c];
    if (std::isnan(y)) { continue; }
    const typename std::vector<Dtype>::const_iterator at =
        std::lower_bound(group_label.begin(), group_label.end(), y);
    if (at == group_label.end() || *at != y) { continue; }
    group_of_column_[c] = at - group_label.begin();
    ++group_begin_[group_of_column_[c] + 1];
  }
  for (int g = 0; g < groups; ++g) { group_begin_[g + 1] += group_begin_[g]; }
  // Counting sort by group keeps each group's columns ascending.
  members_.resize(group_begin_[groups]);
  std::vector<int> next(group_begin_.begin(), group_begin_.end() - 1);
  for (int c = 0; c < count; ++c) {
    if (group_of_column_[c] >= 0) { members_[next[group_of_column_[c]]++] = c; }
  }
  group_of_query_.assign(group_of_column_.begin(),
                         group_of_column_.begin() + num);
  total_positives_ = 0;
  for (int i = 0; i < num; ++i) { total_positives_ += num_positives(i); }
}

template void NPairPositiveIndex::Build<float>(const float*, int, int);
template void NPairPositiveIndex::Build<double>(const double*, int, int);

}  // namespace caffe
