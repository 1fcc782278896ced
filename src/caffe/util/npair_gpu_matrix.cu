// The matrix steps of the N-pair loss's CUDA path (npair_gpu_passes.hpp):
// S = [X X^T | X R^T] by cuBLAS syrk, a mirror and a GEMM, as the CPU's
// Similarity_cpu does; Backward's G_B + G_B^T; and row-major products on
// matrices whose rows are ld apart. The transposing kernels go through
// shared-memory tiles, so that reads and writes of global memory stay
// coalesced.

#include "caffe/common.hpp"
#include "caffe/util/npair_gpu_passes.hpp"

namespace caffe {
namespace npair_gpu {

namespace {

const int kTile = 32;      // square tiles of the transposing kernels
const int kTileRows = 8;   // thread rows per tile

/// S_ij = S_ji for j < i < num: the lower triangle from the upper. Block
/// (bx, by) writes tile (row by, column bx) of the lower triangle from tile
/// (bx, by) of the upper.
template <typename Dtype>
__global__ void MirrorUpperKernel(const int num, const int ld, Dtype* sim) {
  if (blockIdx.x > blockIdx.y) { return; }
  __shared__ Dtype tile[kTile][kTile + 1];
  const int row0 = blockIdx.y * kTile, col0 = blockIdx.x * kTile;
  for (int k = threadIdx.y; k < kTile; k += kTileRows) {
    const int r = col0 + k, c = row0 + threadIdx.x;
    if (r < num && c < num) {
      tile[k][threadIdx.x] = sim[static_cast<size_t>(r) * ld + c];
    }
  }
  __syncthreads();
  for (int k = threadIdx.y; k < kTile; k += kTileRows) {
    const int r = row0 + k, c = col0 + threadIdx.x;
    if (r < num && c < r) {
      sim[static_cast<size_t>(r) * ld + c] = tile[threadIdx.x][k];
    }
  }
}

/// h_ij = g_ij + g_ji: the same sum for (i, j) and (j, i), so h is exactly
/// symmetric.
template <typename Dtype>
__global__ void AddTransposeKernel(const int n, const int ld, const Dtype* g,
    Dtype* h) {
  __shared__ Dtype tile[kTile][kTile + 1];
  const int row0 = blockIdx.y * kTile, col0 = blockIdx.x * kTile;
  for (int k = threadIdx.y; k < kTile; k += kTileRows) {
    const int r = col0 + k, c = row0 + threadIdx.x;
    if (r < n && c < n) {
      tile[k][threadIdx.x] = g[static_cast<size_t>(r) * ld + c];
    }
  }
  __syncthreads();
  for (int k = threadIdx.y; k < kTile; k += kTileRows) {
    const int r = row0 + k, c = col0 + threadIdx.x;
    if (r < n && c < n) {
      const size_t at = static_cast<size_t>(r) * ld + c;
      h[at] = g[at] + tile[threadIdx.x][k];
    }
  }
}

// cuBLAS is column-major: a row-major matrix is the column-major view of its
// transpose. So the row-major upper triangle of X X^T (X: num x dim) is the
// column-major lower triangle of A^T A, A the column-major dim x num view of
// X (trans = T, k = dim, lda = dim).
void SyrkUpper(const int num, const int dim, const float* x, float* sim,
    const int ld) {
  const float alpha = 1, beta = 0;
  CUBLAS_CHECK(cublasSsyrk(Caffe::cublas_handle(), CUBLAS_FILL_MODE_LOWER,
      CUBLAS_OP_T, num, dim, &alpha, x, dim, &beta, sim, ld));
}
void SyrkUpper(const int num, const int dim, const double* x, double* sim,
    const int ld) {
  const double alpha = 1, beta = 0;
  CUBLAS_CHECK(cublasDsyrk(Caffe::cublas_handle(), CUBLAS_FILL_MODE_LOWER,
      CUBLAS_OP_T, num, dim, &alpha, x, dim, &beta, sim, ld));
}

// And the row-major product c = op(a) op(b) is the column-major c^T =
// op(b)^T op(a)^T: cuBLAS's GEMM with the operands swapped.
cublasOperation_t Op(const CBLAS_TRANSPOSE trans) {
  return trans == CblasNoTrans ? CUBLAS_OP_N : CUBLAS_OP_T;
}
void ColumnMajorGemm(const CBLAS_TRANSPOSE trans_a,
    const CBLAS_TRANSPOSE trans_b, const int m, const int n, const int k,
    const float alpha, const float* a, const int lda, const float* b,
    const int ldb, const float beta, float* c, const int ldc) {
  CUBLAS_CHECK(cublasSgemm(Caffe::cublas_handle(), Op(trans_b), Op(trans_a),
      n, m, k, &alpha, b, ldb, a, lda, &beta, c, ldc));
}
void ColumnMajorGemm(const CBLAS_TRANSPOSE trans_a,
    const CBLAS_TRANSPOSE trans_b, const int m, const int n, const int k,
    const double alpha, const double* a, const int lda, const double* b,
    const int ldb, const double beta, double* c, const int ldc) {
  CUBLAS_CHECK(cublasDgemm(Caffe::cublas_handle(), Op(trans_b), Op(trans_a),
      n, m, k, &alpha, b, ldb, a, lda, &beta, c, ldc));
}

dim3 Tiles(const int n) {
  const int tiles = (n + kTile - 1) / kTile;
  return dim3(tiles, tiles);
}

}  // namespace

template <typename Dtype>
void Gemm(const CBLAS_TRANSPOSE trans_a, const CBLAS_TRANSPOSE trans_b,
    const int m, const int n, const int k, const Dtype alpha, const Dtype* a,
    const int lda, const Dtype* b, const int ldb, const Dtype beta, Dtype* c,
    const int ldc) {
  ColumnMajorGemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c,
                  ldc);
}

template <typename Dtype>
void Similarity(const int num, const int refs, const int dim, const Dtype* x,
    const Dtype* r, const int ld, Dtype* sim) {
  // The batch block is symmetric: syrk computes one triangle, half a GEMM's
  // products, and the mirror makes S_ij and S_ji one value.
  SyrkUpper(num, dim, x, sim, ld);
  // NOLINT_NEXT_LINE(whitespace/operators)
  MirrorUpperKernel<Dtype><<<Tiles(num), dim3(kTile, kTileRows)>>>(num, ld,
      sim);
  CUDA_POST_KERNEL_CHECK;
  if (refs > 0) {
    Gemm(CblasNoTrans, CblasTrans, num, refs, dim, Dtype(1), x, dim, r, dim,
         Dtype(0), sim + num, ld);
  }
}

template <typename Dtype>
void AddTranspose(const int n, const int ld, const Dtype* g, Dtype* h) {
  // NOLINT_NEXT_LINE(whitespace/operators)
  AddTransposeKernel<Dtype><<<Tiles(n), dim3(kTile, kTileRows)>>>(n, ld, g,
      h);
  CUDA_POST_KERNEL_CHECK;
}

#define INSTANTIATE_MATRIX_STEPS(Dtype) \
  template void Similarity(const int, const int, const int, const Dtype*, \
      const Dtype*, const int, Dtype*); \
  template void AddTranspose(const int, const int, const Dtype*, Dtype*); \
  template void Gemm(const CBLAS_TRANSPOSE, const CBLAS_TRANSPOSE, \
      const int, const int, const int, const Dtype, const Dtype*, const int, \
      const Dtype*, const int, const Dtype, Dtype*, const int)

INSTANTIATE_MATRIX_STEPS(float);
INSTANTIATE_MATRIX_STEPS(double);

}  // namespace npair_gpu
}  // namespace caffe
