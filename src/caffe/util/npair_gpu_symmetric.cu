// The two symmetric N x N matrices of NPairMultiClassLossLayer's CUDA path
// (npair_gpu_passes.hpp): S = X X^T by cuBLAS syrk and a mirror, as
// Similarity_cpu does, and Backward's G + G^T. Both transpose through
// shared-memory tiles, so that reads and writes of global memory stay
// coalesced.

#include "caffe/common.hpp"
#include "caffe/util/npair_gpu_passes.hpp"

namespace caffe {
namespace npair_gpu {

namespace {

const int kTile = 32;      // square tiles of the transposing kernels
const int kTileRows = 8;   // thread rows per tile

/// S_ij = S_ji for j < i: the lower triangle from the upper. Block (bx, by)
/// writes tile (row by, column bx) of the lower triangle from tile (bx, by)
/// of the upper.
template <typename Dtype>
__global__ void MirrorUpperKernel(const int num, Dtype* sim) {
  if (blockIdx.x > blockIdx.y) { return; }
  __shared__ Dtype tile[kTile][kTile + 1];
  const int row0 = blockIdx.y * kTile, col0 = blockIdx.x * kTile;
  for (int k = threadIdx.y; k < kTile; k += kTileRows) {
    const int r = col0 + k, c = row0 + threadIdx.x;
    if (r < num && c < num) {
      tile[k][threadIdx.x] = sim[static_cast<size_t>(r) * num + c];
    }
  }
  __syncthreads();
  for (int k = threadIdx.y; k < kTile; k += kTileRows) {
    const int r = row0 + k, c = col0 + threadIdx.x;
    if (r < num && c < r) {
      sim[static_cast<size_t>(r) * num + c] = tile[threadIdx.x][k];
    }
  }
}

template <typename Dtype>
__global__ void AddTransposeKernel(const int num, const Dtype* w, Dtype* sum) {
  __shared__ Dtype tile[kTile][kTile + 1];
  const int row0 = blockIdx.y * kTile, col0 = blockIdx.x * kTile;
  for (int k = threadIdx.y; k < kTile; k += kTileRows) {
    const int r = col0 + k, c = row0 + threadIdx.x;
    if (r < num && c < num) {
      tile[k][threadIdx.x] = w[static_cast<size_t>(r) * num + c];
    }
  }
  __syncthreads();
  for (int k = threadIdx.y; k < kTile; k += kTileRows) {
    const int r = row0 + k, c = col0 + threadIdx.x;
    if (r < num && c < num) {
      const size_t at = static_cast<size_t>(r) * num + c;
      sum[at] = w[at] + tile[threadIdx.x][k];
    }
  }
}

// The upper triangle (and diagonal) of the row-major num x num sim = X X^T.
// cuBLAS is column-major: the row-major X (num x dim) is the column-major
// dim x num matrix A, so X X^T = A^T A (trans = T, k = dim, lda = dim), and
// the column-major lower triangle is the row-major upper one.
void SyrkUpper(const int num, const int dim, const float* x, float* sim) {
  const float alpha = 1, beta = 0;
  CUBLAS_CHECK(cublasSsyrk(Caffe::cublas_handle(), CUBLAS_FILL_MODE_LOWER,
      CUBLAS_OP_T, num, dim, &alpha, x, dim, &beta, sim, num));
}
void SyrkUpper(const int num, const int dim, const double* x, double* sim) {
  const double alpha = 1, beta = 0;
  CUBLAS_CHECK(cublasDsyrk(Caffe::cublas_handle(), CUBLAS_FILL_MODE_LOWER,
      CUBLAS_OP_T, num, dim, &alpha, x, dim, &beta, sim, num));
}

dim3 Tiles(const int num) {
  const int n = (num + kTile - 1) / kTile;
  return dim3(n, n);
}

}  // namespace

template <typename Dtype>
void Similarity(const int num, const int dim, const Dtype* x, Dtype* sim) {
  // S is symmetric: syrk computes one triangle, half a GEMM's products, and
  // the mirror makes S_ij and S_ji one value.
  SyrkUpper(num, dim, x, sim);
  // NOLINT_NEXT_LINE(whitespace/operators)
  MirrorUpperKernel<Dtype><<<Tiles(num), dim3(kTile, kTileRows)>>>(num, sim);
  CUDA_POST_KERNEL_CHECK;
}

template <typename Dtype>
void AddTranspose(const int num, const Dtype* w, Dtype* sum) {
  // NOLINT_NEXT_LINE(whitespace/operators)
  AddTransposeKernel<Dtype><<<Tiles(num), dim3(kTile, kTileRows)>>>(num, w,
      sum);
  CUDA_POST_KERNEL_CHECK;
}

template void Similarity(const int, const int, const float*, float*);
template void Similarity(const int, const int, const double*, double*);
template void AddTranspose(const int, const float*, float*);
template void AddTranspose(const int, const double*, double*);

}  // namespace npair_gpu
}  // namespace caffe
