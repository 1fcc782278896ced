#ifndef CAFFE_UTIL_NPAIR_SIMD_HPP_
#define CAFFE_UTIL_NPAIR_SIMD_HPP_

/**
 * @file
 * Packs of lanes for the CPU row passes of NPairMultiClassLossLayer
 * (npair_cpu_passes.hpp): loads and stores of whole or partial packs, lane
 * selects, and e^x for x <= 0. Private to the layer's CPU code: not part of
 * Caffe's installed headers.
 */

#include <stdint.h>

#include <cmath>
#include <cstring>
#include <limits>

namespace caffe {
namespace npair_cpu {

template <typename Dtype>
inline Dtype Inf() { return std::numeric_limits<Dtype>::infinity(); }

// With GCC or Clang a pack is a 16-byte vector (one SSE2 or NEON register:
// 4 floats or 2 doubles), so the passes are vector code whatever the
// compiler flags (GCC will not vectorise selects between floats by itself
// under its default -ftrapping-math); elsewhere a pack is one scalar. Lanes
// are chosen by masks, so the passes built on packs never branch on the data.

#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 9)
template <typename Dtype> struct PackTypes;
template <> struct PackTypes<float> {
  typedef float V __attribute__((vector_size(16)));
  typedef int32_t M __attribute__((vector_size(16)));  // lanes 0 or -1
  typedef double D __attribute__((vector_size(32)));   // V in double
};
template <> struct PackTypes<double> {
  typedef double V __attribute__((vector_size(16)));
  typedef int64_t M __attribute__((vector_size(16)));
  typedef double D __attribute__((vector_size(16)));
};
// (std::memcpy below moves bytes between a pack and memory, or reads one
// type's bits as another's: a register move, no call, and no caffe_copy.)
template <typename Dtype>
struct Pack {
  typedef typename PackTypes<Dtype>::V V;
  typedef typename PackTypes<Dtype>::M M;  // what comparing two V gives
  typedef typename PackTypes<Dtype>::D D;
  enum { kLanes = sizeof(V) / sizeof(Dtype) };
  static V Load(const Dtype* p) {
    V v;
    std::memcpy(&v, p, sizeof(v));  // NOLINT(caffe/alt_fn)
    return v;
  }
  static void Store(Dtype* p, const V v) {
    std::memcpy(p, &v, sizeof(v));  // NOLINT(caffe/alt_fn)
  }
  static V Splat(const Dtype x) { return V() + x; }
  static void AddWidened(const V v, D* sum) {
    *sum += __builtin_convertvector(v, D);
  }
  static V Select(const M m, const V a, const V b) {
    return (V)(((M)a & m) | ((M)b & ~m));
  }
  // Written so, these compile to single max / min instructions (maxps...).
  static V Max(const V a, const V b) { return a > b ? a : b; }
  static V Min(const V a, const V b) { return a < b ? a : b; }
  template <typename T>
  static double Lane(const T& v, const int l) { return v[l]; }
  static bool Any(const M m) {
    uint64_t halves[2];
    std::memcpy(halves, &m, sizeof(halves));  // NOLINT(caffe/alt_fn)
    return (halves[0] | halves[1]) != 0;
  }
};
/// 2^n for packs of integral n in [-126, 127], by building the exponent.
inline Pack<float>::V Pow2(const Pack<float>::V n) {
  return (Pack<float>::V)((__builtin_convertvector(n, Pack<float>::M) + 127)
                          << 23);
}
#else
template <typename Dtype>
struct Pack {
  typedef Dtype V;
  typedef bool M;
  typedef double D;
  enum { kLanes = 1 };
  static V Load(const Dtype* p) { return *p; }
  static void Store(Dtype* p, const V v) { *p = v; }
  static V Splat(const Dtype x) { return x; }
  static void AddWidened(const V v, D* sum) { *sum += v; }
  static V Select(const M m, const V a, const V b) { return m ? a : b; }
  static V Max(const V a, const V b) { return a > b ? a : b; }
  static V Min(const V a, const V b) { return a < b ? a : b; }
  template <typename T>
  static double Lane(const T& v, const int l) { return v; }
  static bool Any(const M m) { return m; }
};
inline float Pow2(const float n) {
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float f;
  std::memcpy(&f, &bits, sizeof(f));  // NOLINT(caffe/alt_fn)
  return f;
}
#endif

/// The first m (1 to kLanes) values at p as a pack, the other lanes `fill`.
template <typename Dtype>
inline typename Pack<Dtype>::V LoadN(const Dtype* p, const int m,
    const Dtype fill) {
  typedef Pack<Dtype> P;
  if (m == P::kLanes) { return P::Load(p); }
  Dtype lanes[P::kLanes];
  for (int l = 0; l < P::kLanes; ++l) { lanes[l] = (l < m) ? p[l] : fill; }
  return P::Load(lanes);
}
/// Stores the first m (1 to kLanes) lanes of v at p.
template <typename Dtype>
inline void StoreN(Dtype* p, const int m,
    const typename Pack<Dtype>::V v) {
  typedef Pack<Dtype> P;
  if (m == P::kLanes) {
    P::Store(p, v);
    return;
  }
  Dtype lanes[P::kLanes];
  P::Store(lanes, v);
  for (int l = 0; l < m; ++l) { p[l] = lanes[l]; }
}

/// e^x lane by lane, for x <= 0 (-inf included). Float: Cephes' expf (range
/// reduction by ln 2, degree-6 polynomial; within 1.2 ulp of exp) in plain
/// arithmetic, and 0 below -87, where expf turns subnormal: such a term is
/// under 1e-37 of its row's largest one, e^0 = 1. Double: std::exp.
inline Pack<float>::V ExpNonPositive(Pack<float>::V x) {
  typedef Pack<float> P;
  const P::M underflow = x < P::Splat(-87.f);
  x = P::Select(underflow, P::Splat(-87.f), x);
  const P::V magic = P::Splat(12582912.f);  // + 1.5 * 2^23 rounds to integer
  const P::V n = (x * 1.44269504088896341f + magic) - magic;  // x / ln 2
  const P::V r = (x - n * 0.693359375f) - n * -2.12194440e-4f;  // x - n ln 2
  P::V p = P::Splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;  // e^r
  return P::Select(underflow, P::Splat(0.f), p * Pow2(n));
}
inline Pack<double>::V ExpNonPositive(const Pack<double>::V x) {
  typedef Pack<double> P;
  double lanes[P::kLanes];
  P::Store(lanes, x);
  for (int l = 0; l < P::kLanes; ++l) { lanes[l] = std::exp(lanes[l]); }
  return P::Load(lanes);
}


}  // namespace npair_cpu
}  // namespace caffe

#endif  // CAFFE_UTIL_NPAIR_SIMD_HPP_
