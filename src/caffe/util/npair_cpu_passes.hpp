#ifndef CAFFE_UTIL_NPAIR_CPU_PASSES_HPP_
#define CAFFE_UTIL_NPAIR_CPU_PASSES_HPP_

/**
 * @file
 * The O(N^2) passes of NPairMultiClassLossLayer's Forward_cpu and
 * Backward_cpu: S = X X^T by a rank-k update, tiled transposes, and the
 * branch-free passes over one row of S (extremes, gathers, the kept mask, the
 * exp pass and its sums, the scaling into G). The mining rules themselves
 * stay in caffe/util/npair_selection.hpp; these only apply them fast.
 *
 * MirrorUpper and AddTranspose split their tiles over the OpenMP threads;
 * the row passes work on one row and are split by their caller. Every
 * result is the same for any number of threads: each element is computed by
 * the same operations in the same order, whichever thread computes it.
 * Private to the layer's CPU code: not part of Caffe's installed headers.
 */

#include <algorithm>
#include <cmath>
#include <limits>

#include "caffe/common.hpp"
#include "caffe/util/mkl_alternate.hpp"
#include "caffe/util/npair_selection.hpp"
#include "caffe/util/npair_simd.hpp"

namespace caffe {
namespace npair_cpu {


// Edge of the square tiles that the transposing copies go through: a tile
// of a row-major n x n matrix is kTile short rows, read or written whole,
// and its transpose is made in a local buffer. (Walking a column directly
// would touch one cache set per element when n is a power of two.)
const int kTile = 16;

// Below this many rows an O(N^2) pass stays on one thread: starting and
// joining a team of threads costs more than such a pass (and far more on a
// machine whose cores are busy with other work).
const int kMinParallelRows = 128;

/// The upper triangle of S = X X^T (X: n x k, row-major), by BLAS syrk.
inline void SyrkUpper(const int n, const int k, const float* x, float* s) {
  cblas_ssyrk(CblasRowMajor, CblasUpper, CblasNoTrans, n, k, 1.f, x,
              std::max(k, 1), 0.f, s, n);
}
inline void SyrkUpper(const int n, const int k, const double* x, double* s) {
  cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, n, k, 1., x,
              std::max(k, 1), 0., s, n);
}

/// a_ij = a_ji for j < i: the upper triangle of the n x n a copied onto the
/// lower, tile by tile. A thread writes the lower part of its rows of tiles
/// and reads only the upper triangle.
template <typename Dtype>
void MirrorUpper(const int n, Dtype* a) {
  // Row of tiles I holds I + 1 tiles: dynamic scheduling evens the triangle.
#pragma omp parallel for schedule(dynamic, 1) if (n >= kMinParallelRows)
  for (int ib = 0; ib < n; ib += kTile) {
    Dtype t[kTile][kTile];
    const int ni = std::min(kTile, n - ib);
    for (int jb = 0; jb <= ib; jb += kTile) {  // tile (I, J), J <= I
      const int nj = std::min(kTile, n - jb);
      for (int j = 0; j < nj; ++j) {  // rows of tile (J, I), transposed
        const Dtype* row = a + (jb + j) * n + ib;
        for (int i = 0; i < ni; ++i) { t[i][j] = row[i]; }
      }
      for (int i = 0; i < ni; ++i) {
        Dtype* row = a + (ib + i) * n + jb;
        const int j_end = (jb == ib) ? i : nj;  // below the diagonal only
        for (int j = 0; j < j_end; ++j) { row[j] = t[i][j]; }
      }
    }
  }
}

/// h = g + g^T (n x n), tile by tile; h is exactly symmetric. The thread of
/// row of tiles I writes tiles (I, J) and (J, I) for J <= I, which no other
/// row of tiles writes.
template <typename Dtype>
void AddTranspose(const int n, const Dtype* g, Dtype* h) {
#pragma omp parallel for schedule(dynamic, 1) if (n >= kMinParallelRows)
  for (int ib = 0; ib < n; ib += kTile) {
    Dtype t[kTile][kTile];
    const int ni = std::min(kTile, n - ib);
    for (int jb = 0; jb <= ib; jb += kTile) {  // tiles (I, J) and (J, I)
      const int nj = std::min(kTile, n - jb);
      for (int j = 0; j < nj; ++j) {  // t = tile (J, I) of g, transposed
        const Dtype* row = g + (jb + j) * n + ib;
        for (int i = 0; i < ni; ++i) { t[i][j] = row[i]; }
      }
      for (int i = 0; i < ni; ++i) {  // tile (I, J) of h, kept in t
        const Dtype* g_row = g + (ib + i) * n + jb;
        Dtype* h_row = h + (ib + i) * n + jb;
        for (int j = 0; j < nj; ++j) {
          t[i][j] += g_row[j];
          h_row[j] = t[i][j];
        }
      }
      if (jb == ib) { continue; }  // A diagonal tile is its own transpose.
      for (int j = 0; j < nj; ++j) {  // tile (J, I) of h
        Dtype* h_row = h + (jb + j) * n + ib;
        for (int i = 0; i < ni; ++i) { h_row[i] = t[i][j]; }
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Row passes: each is one pass over a row of S (16 KB at N = 4096, so the
// row stays in L1 from one pass to the next), on packs of lanes
// (npair_simd.hpp).

/// The largest (kMax) or smallest s_j over j in [begin, end) with
/// (y_j == y0) == kSame; -inf (+inf) when there is none.
template <bool kMax, bool kSame, typename Dtype>
Dtype MaskedExtreme(const Dtype* s, const Dtype* y, const Dtype y0,
    const int begin, const int end) {
  typedef Pack<Dtype> P;
  const Dtype none = kMax ? -Inf<Dtype>() : Inf<Dtype>();
  const typename P::V label = P::Splat(y0), nothing = P::Splat(none);
  typename P::V best = nothing;
  for (int j = begin; j < end; j += P::kLanes) {
    const int m = std::min<int>(P::kLanes, end - j);
    const typename P::V yj = LoadN(y + j, m, y0);
    const typename P::M member = kSame ? yj == label : yj != label;
    // Same-label columns are few in most batches: most packs have none.
    if (kSame && !P::Any(member)) { continue; }
    const typename P::V v = P::Select(member, LoadN(s + j, m, none), nothing);
    best = kMax ? P::Max(v, best) : P::Min(v, best);
  }
  Dtype out = none;
  for (int l = 0; l < P::kLanes; ++l) {
    const Dtype v = static_cast<Dtype>(P::Lane(best, l));
    out = (kMax ? v > out : v < out) ? v : out;
  }
  return out;
}

/// The largest s_j over j in [begin, end) with y_j == y0 (-inf when there is
/// none); adds how many such j there are to *count.
template <typename Dtype>
Dtype BestSame(const Dtype* s, const Dtype* y, const Dtype y0,
    const int begin, const int end, int* count) {
  typedef Pack<Dtype> P;
  const typename P::V label = P::Splat(y0), nothing = P::Splat(-Inf<Dtype>());
  const typename P::V one = P::Splat(1), zero = P::Splat(0);
  // Lanes past the end get a NaN label, which equals no y0.
  const Dtype no_label = std::numeric_limits<Dtype>::quiet_NaN();
  typename P::V best = nothing, members = zero;  // exact: below 2^24
  for (int j = begin; j < end; j += P::kLanes) {
    const int m = std::min<int>(P::kLanes, end - j);
    const typename P::M same = LoadN(y + j, m, no_label) == label;
    if (!P::Any(same)) { continue; }  // Most packs, in most batches.
    best = P::Max(P::Select(same, LoadN(s + j, m, -Inf<Dtype>()), nothing),
                  best);
    members += P::Select(same, one, zero);
  }
  Dtype out = -Inf<Dtype>();
  for (int l = 0; l < P::kLanes; ++l) {
    out = std::max(out, static_cast<Dtype>(P::Lane(best, l)));
    *count += static_cast<int>(P::Lane(members, l));
  }
  return out;
}

/// How many j in [begin, end) with y_j != y0 have s_j >= bound.
template <typename Dtype>
int CountOthersAtLeast(const Dtype* s, const Dtype* y, const Dtype y0,
    const Dtype bound, const int begin, const int end) {
  typedef Pack<Dtype> P;
  const typename P::V label = P::Splat(y0), b = P::Splat(bound);
  const typename P::V one = P::Splat(1), zero = P::Splat(0);
  typename P::V count = zero;  // exact: below 2^24 per lane
  for (int j = begin; j < end; j += P::kLanes) {
    const int m = std::min<int>(P::kLanes, end - j);
    count += P::Select((LoadN(y + j, m, y0) != label) &
                       (LoadN(s + j, m, bound) >= b), one, zero);
  }
  int out = 0;
  for (int l = 0; l < P::kLanes; ++l) {
    out += static_cast<int>(P::Lane(count, l));
  }
  return out;
}

/// The largest Dtype <= b (RoundDown) and the smallest Dtype >= b (RoundUp).
template <typename Dtype>
Dtype RoundDown(const double b) {
  const double top = std::numeric_limits<Dtype>::max();
  if (b > top) { return std::isinf(b) ? Inf<Dtype>() : Dtype(top); }
  if (b < -top) { return -Inf<Dtype>(); }
  const Dtype f = static_cast<Dtype>(b);
  return (f > b) ? std::nextafter(f, -Inf<Dtype>()) : f;
}
template <typename Dtype>
Dtype RoundUp(const double b) {
  const double top = std::numeric_limits<Dtype>::max();
  if (b > top) { return Inf<Dtype>(); }
  if (b < -top) { return std::isinf(b) ? -Inf<Dtype>() : Dtype(-top); }
  const Dtype f = static_cast<Dtype>(b);
  return (f < b) ? std::nextafter(f, Inf<Dtype>()) : f;
}

/**
 * The similarities that mining keeps for a pair of one kind (positive or
 * not) of a row with threshold t, as the interval [lo, hi] of Dtype values.
 *
 * The rule is npair_selection.hpp's, read off it at a point below, at and
 * above b = t + m; each way it can compare s with b in double is then an
 * exact Dtype bound: s < b is s <= pred(up(b)), s <= b is s <= down(b),
 * s > b is s >= succ(down(b)) and s >= b is s >= up(b), with up and down the
 * roundings of b to Dtype toward +inf and -inf. RAND keeps every finite s.
 */
template <typename Dtype>
void KeptRange(const bool positive, const NPairMiningMethod method,
    const double t, const double m, Dtype* lo, Dtype* hi) {
  bool keep[3];  // s below, at and above t + m
  for (int k = 0; k < 3; ++k) {
    keep[k] = positive ? NPairKeepPositive(method, k - 1, 0, 0)
                       : NPairKeepNegative(method, k - 1, 0, 0);
  }
  CHECK(keep[0] || keep[2]) << "a mining rule must keep an interval";
  const Dtype inf = Inf<Dtype>();
  if (keep[0] && keep[2]) {
    *lo = -inf;
    *hi = inf;
    return;
  }
  const double b = t + m;
  *lo = keep[0] ? -inf : keep[1] ? RoundUp<Dtype>(b)
                       : std::nextafter(RoundDown<Dtype>(b), inf);
  *hi = keep[2] ? inf : keep[1] ? RoundDown<Dtype>(b)
                      : std::nextafter(RoundUp<Dtype>(b), -inf);
}

/// Appends to out the s_j, j in [begin, end), with (y_j == y0) == kSame, in
/// order; returns how many, and sets *any_nan if one of them is NaN (a list
/// with a NaN has no order to select from). A pack with no such lane is
/// skipped whole (most are, for the positives); out needs room for
/// end - begin values.
template <bool kSame, typename Dtype>
int GatherRow(const Dtype* s, const Dtype* y, const Dtype y0, const int begin,
    const int end, Dtype* out, bool* any_nan) {
  typedef Pack<Dtype> P;
  const typename P::V label = P::Splat(y0);
  int n = 0;
  bool nan = false;
  for (int j = begin; j < end; j += P::kLanes) {
    const int m = std::min<int>(P::kLanes, end - j);
    const typename P::V yj = LoadN(y + j, m, y0);
    if (!P::Any(kSame ? yj == label : yj != label)) { continue; }
    for (int l = 0; l < m; ++l) {  // Branch-free: out[n] is overwritten
      out[n] = s[j + l];           // until a wanted value stays there.
      const bool wanted = (y[j + l] == y0) == kSame;
      nan |= wanted & (out[n] != out[n]);
      n += wanted;
    }
  }
  *any_nan |= nan;
  return n;
}

/// Pass 1 of a loss row, over j in [begin, end): L_j = s_j where mining keeps
/// the pair (s_j in [lo_pos, hi_pos] when y_j == y0, else in
/// [lo_neg, hi_neg]), -inf elsewhere; raises *max_all to the largest kept
/// s_j and *max_pos to the largest kept s_j with y_j == y0. Returns whether
/// every s_j was finite: s - s is 0 for a finite s and NaN for +-inf or NaN,
/// so the row's non-finite values are found without a pass of their own.
template <typename Dtype>
bool KeepRow(const Dtype* s, const Dtype* y, const Dtype y0,
    const Dtype lo_pos, const Dtype hi_pos, const Dtype lo_neg,
    const Dtype hi_neg, const int begin, const int end, Dtype* L,
    Dtype* max_all, Dtype* max_pos) {
  typedef Pack<Dtype> P;
  const Dtype none = -Inf<Dtype>();
  const typename P::V label = P::Splat(y0), nothing = P::Splat(none);
  const typename P::V lp = P::Splat(lo_pos), hp = P::Splat(hi_pos);
  const typename P::V ln = P::Splat(lo_neg), hn = P::Splat(hi_neg);
  typename P::V all = nothing, pos = nothing, non_finite = P::Splat(0);
  for (int j = begin; j < end; j += P::kLanes) {
    const int m = std::min<int>(P::kLanes, end - j);
    const typename P::V sj = LoadN(s + j, m, none);
    const typename P::V sj_or_0 = LoadN(s + j, m, Dtype(0));  // the same
    non_finite += sj_or_0 - sj_or_0;                         // but the tail
    const typename P::M same = LoadN(y + j, m, y0) == label;
    const typename P::V v = P::Select(
        (sj >= P::Select(same, lp, ln)) & (sj <= P::Select(same, hp, hn)),
        sj, nothing);
    StoreN(L + j, m, v);
    all = P::Max(v, all);
    pos = P::Max(P::Select(same, v, nothing), pos);
  }
  bool finite = true;
  for (int l = 0; l < P::kLanes; ++l) {
    *max_all = std::max(*max_all, static_cast<Dtype>(P::Lane(all, l)));
    *max_pos = std::max(*max_pos, static_cast<Dtype>(P::Lane(pos, l)));
    finite &= P::Lane(non_finite, l) == 0;
  }
  return finite;
}

/// Pass 2, the one exponential of each kept pair (NPairExpShift): in place
/// over the row, L_j becomes f_j = exp(L_j - max_pos) where y_j == y0 and
/// e_j = exp(L_j - max_all) elsewhere (every kept L_j is at most its shift;
/// a dropped L_j = -inf gives 0). *sum_pos and *sum_neg get the sums of the
/// f_j and of the e_j, in double: each lane adds up kBlock terms in Dtype,
/// then those partial sums are added in double.
template <typename Dtype>
void ExpRow(Dtype* L, const Dtype* y, const Dtype y0,
    const Dtype max_all, const Dtype max_pos, const int n, double* sum_neg,
    double* sum_pos) {
  typedef Pack<Dtype> P;
  const int kBlock = 8;
  const typename P::V label = P::Splat(y0), zero = P::Splat(0);
  const typename P::V shift_pos =
      P::Splat(static_cast<Dtype>(NPairExpShift(true, max_all, max_pos)));
  const typename P::V shift_neg =
      P::Splat(static_cast<Dtype>(NPairExpShift(false, max_all, max_pos)));
  typename P::D neg = typename P::D(), pos = typename P::D();
  const int block = kBlock * P::kLanes;
  for (int b = 0; b < n; b += block) {
    const int b_end = std::min(b + block, n);
    typename P::V block_neg = zero, block_pos = zero;
    for (int j = b; j < b_end; j += P::kLanes) {
      const int m = std::min<int>(P::kLanes, b_end - j);
      const typename P::M same = LoadN(y + j, m, y0) == label;
      const typename P::V shift = P::Select(same, shift_pos, shift_neg);
      const typename P::V e =
          ExpNonPositive(LoadN(L + j, m, -Inf<Dtype>()) - shift);
      StoreN(L + j, m, e);
      block_pos += P::Select(same, e, zero);
      block_neg += P::Select(same, zero, e);
    }
    P::AddWidened(block_neg, &neg);
    P::AddWidened(block_pos, &pos);
  }
  *sum_neg = 0;
  *sum_pos = 0;
  for (int l = 0; l < P::kLanes; ++l) {
    *sum_neg += P::Lane(neg, l);
    *sum_pos += P::Lane(pos, l);
  }
}

/// Pass 3: w_j *= (y_j == y0) ? c_same : c_other (NPairRowTerms' pos_scale
/// and neg_scale).
template <typename Dtype>
void ScaleRow(Dtype* w, const Dtype* y, const Dtype y0, const Dtype c_same,
    const Dtype c_other, const int n) {
  typedef Pack<Dtype> P;
  const typename P::V label = P::Splat(y0);
  const typename P::V cs = P::Splat(c_same), co = P::Splat(c_other);
  for (int j = 0; j < n; j += P::kLanes) {
    const int m = std::min<int>(P::kLanes, n - j);
    StoreN(w + j, m, LoadN(w + j, m, Dtype(0)) *
                     P::Select(LoadN(y + j, m, y0) == label, cs, co));
  }
}

}  // namespace npair_cpu
}  // namespace caffe

#endif  // CAFFE_UTIL_NPAIR_CPU_PASSES_HPP_
