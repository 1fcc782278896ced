#ifndef CAFFE_UTIL_NPAIR_CPU_MATRIX_HPP_
#define CAFFE_UTIL_NPAIR_CPU_MATRIX_HPP_

/**
 * @file
 * The matrix steps of the N-pair loss's CPU path on row-major matrices whose
 * rows are `ld` apart: BLAS products into and out of such matrices, and the
 * tiled transposing copies (the mirror that makes S exactly symmetric, and
 * G + G^T for the gradient).
 *
 * The tiled copies split their tiles over the OpenMP threads; every element
 * is computed by the same operations whichever thread computes it, so the
 * result is the same for any number of them. Private to the N-pair CPU
 * code: not part of Caffe's installed headers.
 */

#include <stdint.h>

#include <algorithm>
#include <cstring>

#include "caffe/common.hpp"
#include "caffe/util/mkl_alternate.hpp"
#include "caffe/util/npair_cpu_threads.hpp"

namespace caffe {
namespace npair_cpu {

// Edge of the square tiles that the transposing copies go through: a tile
// is kTile short rows, read or written whole. (Walking a column directly
// would touch one cache line per element.)
const int kTile = 16;

/// The distance between the rows of an N x `count` matrix of the layer: a
/// whole number of 64-byte lines, and not a multiple of 2 KB, where every
/// row of a tile would fall into the same few sets of a cache.
template <typename Dtype>
int PaddedRowLength(const int count) {
  const int line = 64 / sizeof(Dtype);
  int ld = (count + line - 1) / line * line;
  if (ld * sizeof(Dtype) % 2048 == 0) { ld += line; }
  return ld;
}

/// The upper triangle of S = X X^T (X: n x k, row-major; S rows ld apart),
/// by BLAS syrk.
inline void SyrkUpper(const int n, const int k, const float* x, float* s,
    const int ld) {
  cblas_ssyrk(CblasRowMajor, CblasUpper, CblasNoTrans, n, k, 1.f, x,
              std::max(k, 1), 0.f, s, ld);
}
inline void SyrkUpper(const int n, const int k, const double* x, double* s,
    const int ld) {
  cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, n, k, 1., x,
              std::max(k, 1), 0., s, ld);
}

/// c = alpha op(a) b + beta c with b and c dense, a's rows lda apart (and
/// c's ldc apart): op(a) is m x k, b is k x n.
inline void Gemm(const CBLAS_TRANSPOSE trans_a, const CBLAS_TRANSPOSE trans_b,
    const int m, const int n, const int k, const float alpha, const float* a,
    const int lda, const float* b, const float beta, float* c,
    const int ldc) {
  cblas_sgemm(CblasRowMajor, trans_a, trans_b, m, n, k, alpha, a, lda, b,
              trans_b == CblasNoTrans ? n : k, beta, c, ldc);
}
inline void Gemm(const CBLAS_TRANSPOSE trans_a, const CBLAS_TRANSPOSE trans_b,
    const int m, const int n, const int k, const double alpha,
    const double* a, const int lda, const double* b, const double beta,
    double* c, const int ldc) {
  cblas_dgemm(CblasRowMajor, trans_a, trans_b, m, n, k, alpha, a, lda, b,
              trans_b == CblasNoTrans ? n : k, beta, c, ldc);
}

/// A 16-byte vector of Dtype lanes, and the transpose of a square block of
/// them (4 x 4 floats, 2 x 2 doubles) by lane shuffles: a tile is copied
/// transposed a block at a time, never an element at a time.
template <typename Dtype> struct Quad;
template <> struct Quad<float> {
  typedef float V __attribute__((vector_size(16)));
  typedef int32_t Index __attribute__((vector_size(16)));
  enum { kLanes = 4 };
  static inline void Transpose(V* r) {
    const V t0 = __builtin_shuffle(r[0], r[1], (Index){0, 4, 1, 5});
    const V t1 = __builtin_shuffle(r[0], r[1], (Index){2, 6, 3, 7});
    const V t2 = __builtin_shuffle(r[2], r[3], (Index){0, 4, 1, 5});
    const V t3 = __builtin_shuffle(r[2], r[3], (Index){2, 6, 3, 7});
    r[0] = __builtin_shuffle(t0, t2, (Index){0, 1, 4, 5});
    r[1] = __builtin_shuffle(t0, t2, (Index){2, 3, 6, 7});
    r[2] = __builtin_shuffle(t1, t3, (Index){0, 1, 4, 5});
    r[3] = __builtin_shuffle(t1, t3, (Index){2, 3, 6, 7});
  }
};
template <> struct Quad<double> {
  typedef double V __attribute__((vector_size(16)));
  typedef int64_t Index __attribute__((vector_size(16)));
  enum { kLanes = 2 };
  static inline void Transpose(V* r) {
    const V t0 = __builtin_shuffle(r[0], r[1], (Index){0, 2});
    r[1] = __builtin_shuffle(r[0], r[1], (Index){1, 3});
    r[0] = t0;
  }
};

/// A whole kTile x kTile tile: out = a + b^T, or out = b^T without a; rows
/// of a, b and out lda, ldb and ldo apart.
template <typename Dtype>
inline void TransposeTile(const Dtype* a, const int lda, const Dtype* b,
    const int ldb, Dtype* out, const int ldo) {
  typedef Quad<Dtype> Q;
  const int kQ = Q::kLanes;
  for (int bi = 0; bi < kTile; bi += kQ) {
    for (int bj = 0; bj < kTile; bj += kQ) {
      // Block (bi, bj) of out from block (bj, bi) of b.
      typename Q::V r[kQ];
      for (int k = 0; k < kQ; ++k) {
        std::memcpy(&r[k], b + static_cast<size_t>(bj + k) * ldb + bi,
                    sizeof(r[k]));  // NOLINT(caffe/alt_fn)
      }
      Q::Transpose(r);
      for (int k = 0; k < kQ; ++k) {
        if (a) {
          typename Q::V v;
          std::memcpy(&v, a + static_cast<size_t>(bi + k) * lda + bj,
                      sizeof(v));  // NOLINT(caffe/alt_fn)
          r[k] = v + r[k];
        }
        std::memcpy(out + static_cast<size_t>(bi + k) * ldo + bj, &r[k],
                    sizeof(r[k]));  // NOLINT(caffe/alt_fn)
      }
    }
  }
}

/// The same for a partial tile (ni x nj of out), element by element.
template <typename Dtype>
inline void TransposeEdgeTile(const Dtype* a, const int lda, const Dtype* b,
    const int ldb, Dtype* out, const int ldo, const int ni, const int nj) {
  for (int i = 0; i < ni; ++i) {
    for (int j = 0; j < nj; ++j) {
      const Dtype t = b[static_cast<size_t>(j) * ldb + i];
      out[static_cast<size_t>(i) * ldo + j] =
          a ? a[static_cast<size_t>(i) * lda + j] + t : t;
    }
  }
}

/// a_ij = a_ji for j < i < n: the upper triangle of the n x n corner of a
/// copied onto its lower one, tile by tile. A thread writes the lower part
/// of its rows of tiles and reads only the upper triangle.
template <typename Dtype>
void MirrorUpper(const int n, const int ld, Dtype* a) {
  // Row of tiles I holds I + 1 tiles: dynamic scheduling evens the triangle.
#pragma omp parallel for schedule(dynamic, 1) if (n >= kMinParallelRows)
  for (int ib = 0; ib < n; ib += kTile) {
    const int ni = std::min(kTile, n - ib);
    for (int jb = 0; jb < ib; jb += kTile) {  // tile (I, J) from (J, I)
      const Dtype* from = a + static_cast<size_t>(jb) * ld + ib;
      Dtype* to = a + static_cast<size_t>(ib) * ld + jb;
      if (ni == kTile) {
        TransposeTile<Dtype>(NULL, 0, from, ld, to, ld);
      } else {
        TransposeEdgeTile<Dtype>(NULL, 0, from, ld, to, ld, ni, kTile);
      }
    }
    for (int i = 1; i < ni; ++i) {  // the diagonal tile, below its diagonal
      for (int j = 0; j < i; ++j) {
        a[static_cast<size_t>(ib + i) * ld + ib + j] =
            a[static_cast<size_t>(ib + j) * ld + ib + i];
      }
    }
  }
}

/// h = g + g^T over the n x n corners of g and h (rows ld apart), tile by
/// tile: h_ij = g_ij + g_ji and h_ji = g_ji + g_ij, one value, so h is
/// exactly symmetric. The thread of row of tiles I writes tiles (I, J) and
/// (J, I) for J <= I, which no other row of tiles writes.
template <typename Dtype>
void AddTranspose(const int n, const int ld, const Dtype* g, Dtype* h) {
#pragma omp parallel for schedule(dynamic, 1) if (n >= kMinParallelRows)
  for (int ib = 0; ib < n; ib += kTile) {
    const int ni = std::min(kTile, n - ib);
    for (int jb = 0; jb <= ib; jb += kTile) {  // tiles (I, J) and (J, I)
      const int nj = std::min(kTile, n - jb);
      const Dtype* g_ij = g + static_cast<size_t>(ib) * ld + jb;
      const Dtype* g_ji = g + static_cast<size_t>(jb) * ld + ib;
      Dtype* h_ij = h + static_cast<size_t>(ib) * ld + jb;
      Dtype* h_ji = h + static_cast<size_t>(jb) * ld + ib;
      if (ni == kTile && nj == kTile) {
        TransposeTile(g_ij, ld, g_ji, ld, h_ij, ld);
        if (jb != ib) { TransposeTile(g_ji, ld, g_ij, ld, h_ji, ld); }
      } else {
        TransposeEdgeTile(g_ij, ld, g_ji, ld, h_ij, ld, ni, nj);
        if (jb != ib) {
          TransposeEdgeTile(g_ji, ld, g_ij, ld, h_ji, ld, nj, ni);
        }
      }
    }
  }
}

}  // namespace npair_cpu
}  // namespace caffe

#endif  // CAFFE_UTIL_NPAIR_CPU_MATRIX_HPP_
