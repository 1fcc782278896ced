// A brute-force reference of the N-pair loss for the gtests: the formulas of
// docs/layer_contract.md §3 and §4 as plain loops in double, with whole sorts
// where the layer selects, and sums without log-sum-exp shifts (so keep |S|
// well below 700 here). Written from the contract, independently of the
// layer's code (it includes none of it), and the mining configurations the
// tests run through.
//
// Query i's candidates are the other batch samples and every reference; a
// pair is (i, c) with c != i, and a label equals what compares equal to it: a
// NaN label has no positive, and is every other query's negative.

#ifndef CAFFE_TEST_NPAIR_REFERENCE_HPP_
#define CAFFE_TEST_NPAIR_REFERENCE_HPP_

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "gtest/gtest.h"

#include "caffe/blob.hpp"
#include "caffe/proto/caffe.pb.h"

namespace caffe {
namespace npair_test {

using std::vector;

typedef NPairLossParameter P;  // For the enum names.

const double kInf = std::numeric_limits<double>::infinity();
const double kNaN = std::numeric_limits<double>::quiet_NaN();

// Every (region, method) of one side, for loops over the whole space.
const P::MiningRegion kRegions[] = {P::LOCAL, P::GLOBAL};
const P::MiningMethod kMethods[] =
    {P::HARD, P::EASY, P::RAND, P::RELATIVE_HARD, P::RELATIVE_EASY};

// What the layer should output for a batch, loss weight 1 on the loss.
struct NPairExpected {
  double loss;
  double recall[3];         // R@1, R@5, R@10
  double asum;
  vector<double> grad;      // d loss / d X, N x D
  vector<double> ref_grad;  // d loss / d R, M x D
};

inline bool ReferenceKeep(bool positive, P::MiningMethod method, double s,
                          double t, double m) {
  switch (method) {
  case P::HARD:          return positive ? s < t + m : s > t + m;
  case P::EASY:          return positive ? s >= t + m : s <= t + m;
  case P::RELATIVE_HARD: return positive ? s <= t + m : s >= t + m;
  case P::RELATIVE_EASY: return positive ? s >= t + m : s <= t + m;
  default:               return true;
  }
}

// t+ (positives = true) or t- of every query; s is N x C, cy the C labels.
inline vector<double> ReferenceThresholds(const vector<vector<double> >& s,
    const vector<double>& cy, bool positives, P::MiningRegion region,
    P::MiningMethod method, float sn) {
  const int num = s.size(), count = cy.size();
  const bool relative =
      method == P::RELATIVE_HARD || method == P::RELATIVE_EASY;
  // Relative: the list of the side's own pairs. Otherwise: positives look at
  // the negatives' maximum, negatives at the positives' minimum.
  const bool list_of_positives = relative ? positives : !positives;
  vector<double> t(num);
  for (int i = 0; i < num; ++i) {
    vector<double> list;
    for (int a = 0; a < num; ++a) {
      for (int c = 0; c < count; ++c) {
        if (a != c && (region == P::GLOBAL || a == i) &&
            (cy[a] == cy[c]) == list_of_positives) {
          list.push_back(s[a][c]);
        }
      }
    }
    std::sort(list.begin(), list.end());
    const double n = list.size();
    const double v = sn;  // The float32 value, exactly.
    if (list.empty()) {
      t[i] = positives ? -kInf : kInf;
    } else if (relative) {
      double pos = (v >= 0) ? n - 1 - std::floor(v) : std::trunc(n - 1 + v * n);
      pos = std::min(std::max(pos, 0.0), n - 1);
      t[i] = list[static_cast<int>(pos)];
    } else {
      t[i] = positives ? list.back() : list.front();
    }
  }
  return t;
}

// Queries x (N x dim) with labels y against the other queries and the
// references r (M x dim) with labels z.
inline NPairExpected NPairReference(const vector<double>& x,
    const vector<double>& y, const vector<double>& r, const vector<double>& z,
    int dim, const NPairLossParameter& p) {
  const int num = y.size(), refs = z.size(), count = num + refs;
  vector<double> cy(y);
  cy.insert(cy.end(), z.begin(), z.end());
  // Candidate c's feature row.
  vector<const double*> cand(count);
  for (int c = 0; c < count; ++c) {
    cand[c] = c < num ? &x[c * dim] : &r[(c - num) * dim];
  }
  vector<vector<double> > s(num, vector<double>(count, 0));
  for (int i = 0; i < num; ++i) {
    for (int c = 0; c < count; ++c) {
      for (int k = 0; k < dim; ++k) { s[i][c] += x[i * dim + k] * cand[c][k]; }
    }
  }
  NPairExpected out;
  out.asum = 0;
  for (int i = 0; i < x.size(); ++i) { out.asum += std::fabs(x[i]); }
  out.asum /= num;
  // A non-finite s_ic (s_ii included) makes l_i NaN and row i of G NaN; every
  // row of both gradients then has a NaN term. The monitors are left
  // unchecked: they report whatever they compute.
  for (int i = 0; i < num; ++i) {
    for (int c = 0; c < count; ++c) {
      if (!std::isfinite(s[i][c])) {
        out.loss = kNaN;
        out.grad.assign(num * dim, kNaN);
        out.ref_grad.assign(refs * dim, kNaN);
        out.recall[0] = out.recall[1] = out.recall[2] = kNaN;
        return out;
      }
    }
  }
  const vector<double> t_pos = ReferenceThresholds(s, cy, true,
      p.ap_mining_region(), p.ap_mining_method(), p.identsn());
  const vector<double> t_neg = ReferenceThresholds(s, cy, false,
      p.an_mining_region(), p.an_mining_method(), p.diffsn());
  out.loss = 0;
  vector<vector<double> > g(num, vector<double>(count, 0));
  for (int i = 0; i < num; ++i) {
    vector<bool> kept(count, false);
    double sum_all = 0, sum_pos = 0;
    int kept_pos = 0;
    for (int c = 0; c < count; ++c) {
      if (c == i) { continue; }
      const bool same = (cy[c] == y[i]);
      kept[c] = same ?
          ReferenceKeep(true, p.ap_mining_method(), s[i][c], t_pos[i],
                        p.margin_ident()) :
          ReferenceKeep(false, p.an_mining_method(), s[i][c], t_neg[i],
                        p.margin_diff());
      if (!kept[c]) { continue; }
      sum_all += std::exp(s[i][c]);
      if (same) { sum_pos += std::exp(s[i][c]); ++kept_pos; }
    }
    if (kept_pos == 0) { continue; }
    out.loss += std::log(sum_all) - std::log(sum_pos);
    for (int c = 0; c < count; ++c) {
      if (!kept[c]) { continue; }
      g[i][c] = std::exp(s[i][c]) / sum_all -
          (cy[c] == y[i] ? std::exp(s[i][c]) / sum_pos : 0);
    }
  }
  out.loss /= num;
  // d/dx_i of sum_ac g_ac s_ac: g_ic cand_c from query i's own row, and
  // g_ai x_a from every row where i is the batch candidate; d/dr_m: g_a,N+m x_a.
  out.grad.assign(num * dim, 0);
  out.ref_grad.assign(refs * dim, 0);
  for (int i = 0; i < num; ++i) {
    for (int c = 0; c < count; ++c) {
      for (int k = 0; k < dim; ++k) {
        out.grad[i * dim + k] += g[i][c] * cand[c][k] / num;
        if (c < num) {
          out.grad[c * dim + k] += g[i][c] * x[i * dim + k] / num;
        } else {
          out.ref_grad[(c - num) * dim + k] += g[i][c] * x[i * dim + k] / num;
        }
      }
    }
  }
  const int kK[] = {1, 5, 10};
  int eligible = 0, hits[3] = {0, 0, 0};
  for (int i = 0; i < num; ++i) {
    int positives = 0;
    double best = -kInf;
    for (int c = 0; c < count; ++c) {
      if (c != i && cy[c] == y[i]) {
        ++positives;
        best = std::max(best, s[i][c]);
      }
    }
    if (positives == 0) { continue; }
    ++eligible;
    int ahead = 0;
    for (int c = 0; c < count; ++c) {
      if (c != i && cy[c] != y[i] && s[i][c] >= best) { ++ahead; }
    }
    for (int k = 0; k < 3; ++k) { hits[k] += ahead < kK[k]; }
  }
  for (int k = 0; k < 3; ++k) {
    out.recall[k] = eligible ? static_cast<double>(hits[k]) / eligible : 0;
  }
  return out;
}

// The batch alone (no references).
inline NPairExpected NPairReference(const vector<double>& x,
    const vector<double>& y, int dim, const NPairLossParameter& p) {
  return NPairReference(x, y, vector<double>(), vector<double>(), dim, p);
}

// How far the outcome of every comparison mining makes is from flipping: the
// thresholds are similarities (or +-inf), compared with a similarity shifted
// by 0 or a margin. Moving one coordinate by h moves every similarity by at
// most h * max|x|, so no comparison flips while this exceeds 2 h max|x|.
// x: the N queries; r: the M references (all of them dim wide).
inline double MiningSlack(const vector<double>& x, const vector<double>& r,
    int dim, const vector<double>& margins) {
  const int num = x.size() / dim, refs = r.size() / dim;
  vector<double> s;
  for (int i = 0; i < num; ++i) {
    for (int c = i + 1; c < num + refs; ++c) {
      const double* other = c < num ? &x[c * dim] : &r[(c - num) * dim];
      double dot = 0;
      for (int k = 0; k < dim; ++k) { dot += x[i * dim + k] * other[k]; }
      s.push_back(dot);
    }
  }
  double slack = kInf;
  for (int a = 0; a < s.size(); ++a) {
    for (int b = 0; b < s.size(); ++b) {
      for (int m = 0; m < margins.size(); ++m) {
        // A similarity against itself (the threshold it set) cannot flip.
        if (a == b && margins[m] == 0) { continue; }
        slack = std::min(slack, std::fabs(s[a] - s[b] - margins[m]));
      }
    }
  }
  return slack;
}

inline NPairLossParameter Mining(P::MiningRegion ap_region,
    P::MiningMethod ap_method, P::MiningRegion an_region,
    P::MiningMethod an_method) {
  NPairLossParameter p;
  p.set_ap_mining_region(ap_region);
  p.set_ap_mining_method(ap_method);
  p.set_an_mining_region(an_region);
  p.set_an_mining_method(an_method);
  return p;
}

// A layer's parameter: `mining` with these margins and SNs.
inline LayerParameter LayerWith(const NPairLossParameter& mining,
    float margin_ident, float margin_diff, float identsn, float diffsn) {
  LayerParameter param;
  NPairLossParameter* p = param.mutable_npair_loss_param();
  p->CopyFrom(mining);
  p->set_margin_ident(margin_ident);
  p->set_margin_diff(margin_diff);
  p->set_identsn(identsn);
  p->set_diffsn(diffsn);
  return param;
}

// All 100 mining configurations, margins and SNs left at their defaults.
inline vector<NPairLossParameter> AllMinings() {
  vector<NPairLossParameter> all;
  for (int a = 0; a < 2; ++a) {
    for (int b = 0; b < 5; ++b) {
      for (int c = 0; c < 2; ++c) {
        for (int d = 0; d < 5; ++d) {
          all.push_back(Mining(kRegions[a], kMethods[b], kRegions[c],
                               kMethods[d]));
        }
      }
    }
  }
  return all;
}

// The layer's five tops and its gradients (into the features, and into the
// references when `refs` is given) against `expected`, within the tolerances
// of docs/layer_contract.md §5: the gradients relative to the largest element
// of both together.
template <typename Dtype>
void ExpectMatches(const NPairExpected& expected,
                   const vector<Blob<Dtype>*>& tops,
                   const Blob<Dtype>& features, const Blob<Dtype>* refs) {
  const bool is_float = sizeof(Dtype) == 4;
  const double rel = is_float ? 1e-4 : 1e-10;
  EXPECT_NEAR(expected.loss, tops[0]->cpu_data()[0],
              rel * std::max(std::fabs(expected.loss), 1e-3));
  for (int k = 0; k < 3; ++k) {
    EXPECT_NEAR(expected.recall[k], tops[1 + k]->cpu_data()[0], rel);
  }
  EXPECT_NEAR(expected.asum, tops[4]->cpu_data()[0], rel * expected.asum);
  double largest = 0;
  for (int i = 0; i < expected.grad.size(); ++i) {
    largest = std::max(largest, std::fabs(expected.grad[i]));
  }
  for (int i = 0; refs && i < expected.ref_grad.size(); ++i) {
    largest = std::max(largest, std::fabs(expected.ref_grad[i]));
  }
  const double tol = (is_float ? 1e-3 : 1e-8) * largest;
  for (int i = 0; i < expected.grad.size(); ++i) {
    EXPECT_NEAR(expected.grad[i], features.cpu_diff()[i], tol) << i;
  }
  for (int i = 0; refs && i < expected.ref_grad.size(); ++i) {
    EXPECT_NEAR(expected.ref_grad[i], refs->cpu_diff()[i], tol) << i;
  }
}

}  // namespace npair_test
}  // namespace caffe

#endif  // CAFFE_TEST_NPAIR_REFERENCE_HPP_
