// The CUDA path of NPairMultiClassLossLayer: the same steps as Forward_cpu
// and Backward_cpu (similarity, thresholds, mining, loss and pair weights,
// Recall@K, feature_asum; then (G + G^T) X), with the same rules from
// caffe/util/npair_selection.hpp, on the device. Nothing N x N leaves the GPU:
// the scalar tops are written by a kernel, only feature_asum passes the host.
//
// Buffers: sim_ (S), pair_weight_ (G / (g / N), as on the CPU) and
// pair_scratch_, which Backward fills with G + G^T and Forward uses as a small
// arena (per-query loss, Recall counts, radix-select state): three N x N.
//
// Thresholds on the device:
//  - HARD / EASY: one block per query reduces its row (max of the negatives,
//    min of the positives); GLOBAL then reduces those N values in one block.
//  - RELATIVE_*: an order statistic, found by radix select instead of a sort
//    (caffe/util/npair_radix_select.hpp): similarities map to unsigned keys
//    with the same order, and one 8-bit digit is fixed per pass from a 256-bin
//    histogram of the keys that match the digits fixed so far (4 passes for
//    float, 8 for double). LOCAL runs the passes inside one block per row;
//    GLOBAL merges the rows' histograms in global memory and picks each digit
//    in a one-thread kernel, so the list of N (N - 1) pairs is never built,
//    sorted or copied.

#include <math.h>

#include <algorithm>
#include <vector>

#include "cub/block/block_reduce.cuh"

#include "caffe/layers/npair_multiclass_loss_layer.hpp"
#include "caffe/util/math_functions.hpp"
#include "caffe/util/npair_radix_select.hpp"

namespace caffe {

namespace {

const int kThreads = 256;  // per block of the row kernels; a multiple of 32
const int kTile = 32;      // square tiles of the transposing kernels
const int kTileRows = 8;   // thread rows per tile

struct MaxOp {
  template <typename T>
  __device__ T operator()(const T a, const T b) const { return a < b ? b : a; }
};
struct MinOp {
  template <typename T>
  __device__ T operator()(const T a, const T b) const { return b < a ? b : a; }
};
struct SumOp {
  template <typename T>
  __device__ T operator()(const T a, const T b) const { return a + b; }
};

/// Reduces v over the block (kThreads threads) and returns the result to
/// every thread. Every thread of the block must call it.
template <typename T, typename Op>
__device__ T BlockAllReduce(const T v, const Op op) {
  typedef cub::BlockReduce<T, kThreads> Reduce;
  __shared__ typename Reduce::TempStorage temp;
  __shared__ T result;
  const T r = Reduce(temp).Reduce(v, op);
  if (threadIdx.x == 0) { result = r; }
  __syncthreads();
  const T out = result;
  __syncthreads();  // temp and result are reused by the next call
  return out;
}

// ---- similarity -------------------------------------------------------------

/// S_ij = S_ji for j < i, as Similarity_cpu does: the GLOBAL lists hold both
/// (i, j) and (j, i) and must see one value. Block (bx, by) writes tile
/// (row by, column bx) of the lower triangle from tile (bx, by) of the upper.
template <typename Dtype>
__global__ void MirrorUpper(const int num, Dtype* sim) {
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

/// sum = w + w^T (Backward's G + G^T, up to the factor g / N).
template <typename Dtype>
__global__ void AddTranspose(const int num, const Dtype* w, Dtype* sum) {
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

// ---- HARD / EASY thresholds and Recall@K counts -----------------------------

/// One block per query i. Writes the absolute thresholds of row i where asked
/// (t+ = most similar negative, -inf if none; t- = least similar positive,
/// +inf if none) and, for Recall@K, ahead[i] = the number of negatives at
/// least as similar as the best positive (-1: not eligible, no positive).
/// j == i is neither: a NaN label equals no label, its own included.
template <typename Dtype>
__global__ void RowExtremes(const int num, const Dtype* sim,
    const Dtype* labels, const bool want_pos_threshold,
    const bool want_neg_threshold, const bool want_recall,
    Dtype* pos_threshold, Dtype* neg_threshold, int* ahead) {
  const int i = blockIdx.x;
  const Dtype* s = sim + static_cast<size_t>(i) * num;
  const Dtype label = labels[i];
  const Dtype inf = HUGE_VAL;
  Dtype neg_max = -inf, pos_min = inf, pos_max = -inf;
  int num_pos = 0;
  for (int j = threadIdx.x; j < num; j += kThreads) {
    if (j == i) { continue; }
    if (labels[j] == label) {
      pos_min = min(pos_min, s[j]);
      pos_max = max(pos_max, s[j]);
      ++num_pos;
    } else {
      neg_max = max(neg_max, s[j]);
    }
  }
  neg_max = BlockAllReduce(neg_max, MaxOp());
  pos_min = BlockAllReduce(pos_min, MinOp());
  if (threadIdx.x == 0) {
    if (want_pos_threshold) { pos_threshold[i] = neg_max; }
    if (want_neg_threshold) { neg_threshold[i] = pos_min; }
  }
  if (!want_recall) { return; }
  num_pos = BlockAllReduce(num_pos, SumOp());
  pos_max = BlockAllReduce(pos_max, MaxOp());
  int count = 0;
  for (int j = threadIdx.x; j < num; j += kThreads) {
    // A negative tied with the best positive ranks ahead of it.
    if (j != i && labels[j] != label && s[j] >= pos_max) { ++count; }
  }
  count = BlockAllReduce(count, SumOp());
  if (threadIdx.x == 0) {
    ahead[i] = NPairRecallEligible(num_pos) ? count : -1;
  }
}

/// GLOBAL HARD / EASY: every threshold[i] becomes the max (or min) of all.
template <typename Dtype>
__global__ void BatchExtreme(const int num, const bool take_max,
    Dtype* threshold) {
  const Dtype inf = HUGE_VAL;
  Dtype v = take_max ? -inf : inf;
  for (int i = threadIdx.x; i < num; i += kThreads) {
    v = take_max ? max(v, threshold[i]) : min(v, threshold[i]);
  }
  v = take_max ? BlockAllReduce(v, MaxOp()) : BlockAllReduce(v, MinOp());
  for (int i = threadIdx.x; i < num; i += kThreads) { threshold[i] = v; }
}

// ---- RELATIVE_* thresholds: radix select ------------------------------------

/// Where a select stands: the digits fixed so far (prefix under mask), the
/// rank still sought among the keys that match them, and whether the list
/// was empty. For GLOBAL it lives in device memory with the merged histogram.
struct RadixState {
  unsigned long long hist[256];  // NOLINT(runtime/int)
  unsigned long long prefix;     // NOLINT(runtime/int)
  unsigned long long mask;       // NOLINT(runtime/int)
  long long rank;                // NOLINT(runtime/int)
  int empty;
};

/// hist[bin] += 1 for every lane of the warp (bin 256: nothing), one atomic
/// per distinct bin: similarities crowd into few bins, and per-lane atomics on
/// one shared address would serialise. All 32 lanes must call it.
__device__ inline void HistogramAdd(unsigned int* hist, const int bin) {
  const unsigned int peers = __match_any_sync(0xffffffffu, bin);
  if (bin < 256 && (threadIdx.x & 31) == __ffs(peers) - 1) {
    atomicAdd(&hist[bin], static_cast<unsigned int>(__popc(peers)));
  }
}

/// hist (256 bins, shared, zeroed by the caller) of digit `shift` of the
/// keys of row i's pairs of one kind whose higher digits equal prefix.
template <typename Dtype>
__device__ void RowHistogram(const int num, const int i, const Dtype* sim,
    const Dtype* labels, const bool same_label, const int shift,
    const typename NPairRadixKey<Dtype>::Key prefix,
    const typename NPairRadixKey<Dtype>::Key mask, unsigned int* hist) {
  typedef typename NPairRadixKey<Dtype>::Key Key;
  const Dtype* s = sim + static_cast<size_t>(i) * num;
  const Dtype label = labels[i];
  // The loop bound is the same for every lane, as HistogramAdd needs.
  for (int base = 0; base < num; base += kThreads) {
    const int j = base + threadIdx.x;
    int bin = 256;
    if (j < num && j != i && (labels[j] == label) == same_label) {
      const Key key = NPairRadixKey<Dtype>::Of(s[j]);
      if ((key & mask) == prefix) {
        bin = static_cast<int>((key >> shift) & 255);
      }
    }
    HistogramAdd(hist, bin);
  }
}

/// LOCAL RELATIVE_*: one block per query selects its threshold from its own
/// row; empty_value (+-inf, as on the CPU) where the row has no such pair.
template <typename Dtype>
__global__ void RowRadixSelect(const int num, const Dtype* sim,
    const Dtype* labels, const bool same_label, const float sn,
    const Dtype empty_value, Dtype* threshold) {
  typedef typename NPairRadixKey<Dtype>::Key Key;
  __shared__ unsigned int hist[256];
  __shared__ Key prefix, mask;
  __shared__ long long rank;  // NOLINT(runtime/int)
  __shared__ int empty;
  if (threadIdx.x == 0) {
    prefix = 0;
    mask = 0;
    empty = 0;
  }
  for (int shift = NPairRadixKey<Dtype>::kBits - 8; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < 256; b += kThreads) { hist[b] = 0; }
    __syncthreads();
    RowHistogram(num, blockIdx.x, sim, labels, same_label, shift, prefix, mask,
                 hist);
    __syncthreads();
    if (threadIdx.x == 0) {
      NPairPickDigit(hist, shift, shift == NPairRadixKey<Dtype>::kBits - 8, sn,
                     &prefix, &mask, &rank, &empty);
    }
    __syncthreads();
    if (empty) { break; }
  }
  if (threadIdx.x == 0) {
    threshold[blockIdx.x] =
        empty ? empty_value : NPairRadixKey<Dtype>::Value(prefix);
  }
}

/// GLOBAL RELATIVE_*, one pass: each block adds its row's histogram to the
/// batch's.
template <typename Dtype>
__global__ void BatchHistogram(const int num, const Dtype* sim,
    const Dtype* labels, const bool same_label, const int shift,
    RadixState* state) {
  typedef typename NPairRadixKey<Dtype>::Key Key;
  __shared__ unsigned int hist[256];
  for (int b = threadIdx.x; b < 256; b += kThreads) { hist[b] = 0; }
  __syncthreads();
  if (state->empty) { return; }  // the same for the whole block
  RowHistogram(num, blockIdx.x, sim, labels, same_label, shift,
               static_cast<Key>(state->prefix), static_cast<Key>(state->mask),
               hist);
  __syncthreads();
  for (int b = threadIdx.x; b < 256; b += kThreads) {
    if (hist[b]) {
      atomicAdd(&state->hist[b],
                static_cast<unsigned long long>(hist[b]));  // NOLINT
    }
  }
}

/// GLOBAL RELATIVE_*, one pass: one thread fixes the digit, then clears the
/// histogram for the next pass.
__global__ void BatchPickDigit(const int shift, const bool first,
    const float sn, RadixState* state) {
  if (!state->empty) {
    NPairPickDigit(state->hist, shift, first, sn, &state->prefix,
                   &state->mask, &state->rank, &state->empty);
  }
  for (int b = 0; b < 256; ++b) { state->hist[b] = 0; }
}

template <typename Dtype>
__global__ void BatchBroadcast(const int num, const RadixState* state,
    const Dtype empty_value, Dtype* threshold) {
  typedef typename NPairRadixKey<Dtype>::Key Key;
  const Dtype v = state->empty ? empty_value :
      NPairRadixKey<Dtype>::Value(static_cast<Key>(state->prefix));
  CUDA_KERNEL_LOOP(i, num) { threshold[i] = v; }
}

// ---- loss, pair weights, tops -----------------------------------------------

/// Whether mining keeps pair (i, j), j != i; *positive says which kind it is.
template <typename Dtype>
__device__ inline bool Kept(const Dtype s, const bool positive,
    const NPairMiningMethod ap_method, const NPairMiningMethod an_method,
    const double pos_threshold, const double neg_threshold,
    const float margin_ident, const float margin_diff) {
  return positive ?
      NPairKeepPositive(ap_method, s, pos_threshold, margin_ident) :
      NPairKeepNegative(an_method, s, neg_threshold, margin_diff);
}

/// One block per query i, as LossAndPairWeights_cpu's row: row_loss[i] = l_i
/// and row i of weight = G_i. / (g / N), by the one log-sum-exp recipe of
/// npair_selection.hpp: each kept pair's exponential, shifted by
/// NPairExpShift, is stored in the row, summed by kind, and scaled by the
/// factors of NPairRowTermsOf. A row without a kept positive is 0, a row
/// with a non-finite S_ij (S_ii included) NaN, for every mining.
template <typename Dtype>
__global__ void RowLossAndWeights(const int num, const Dtype* sim,
    const Dtype* labels, const Dtype* pos_threshold,
    const Dtype* neg_threshold, const NPairMiningMethod ap_method,
    const NPairMiningMethod an_method, const float margin_ident,
    const float margin_diff, Dtype* weight, double* row_loss) {
  const int i = blockIdx.x;
  const Dtype* s = sim + static_cast<size_t>(i) * num;
  Dtype* w = weight + static_cast<size_t>(i) * num;
  const Dtype label = labels[i];
  const double t_pos = pos_threshold[i], t_neg = neg_threshold[i];
  // The shifts, and whether the row is finite: s - s is 0 for a finite s and
  // NaN for an infinite or NaN one, and a NaN survives the block's sum.
  double max_all = -HUGE_VAL, max_pos = -HUGE_VAL, non_finite = 0;
  int num_pos = 0;
  for (int j = threadIdx.x; j < num; j += kThreads) {
    non_finite += static_cast<double>(s[j]) - s[j];
    const bool positive = labels[j] == label;
    if (j != i && Kept(s[j], positive, ap_method, an_method, t_pos, t_neg,
                       margin_ident, margin_diff)) {
      max_all = max(max_all, static_cast<double>(s[j]));
      if (positive) {
        max_pos = max(max_pos, static_cast<double>(s[j]));
        ++num_pos;
      }
    }
  }
  non_finite = BlockAllReduce(non_finite, SumOp());
  num_pos = BlockAllReduce(num_pos, SumOp());
  max_all = BlockAllReduce(max_all, MaxOp());
  max_pos = BlockAllReduce(max_pos, MaxOp());
  const bool finite = non_finite == 0;
  const bool terms_to_sum = finite && num_pos > 0;  // the same for the block
  // One exponential per kept pair, into the row; 0 for the pairs dropped.
  double sum_neg = 0, sum_pos = 0;
  if (terms_to_sum) {
    for (int j = threadIdx.x; j < num; j += kThreads) {
      const bool positive = labels[j] == label;
      double e = 0;
      if (j != i && Kept(s[j], positive, ap_method, an_method, t_pos, t_neg,
                         margin_ident, margin_diff)) {
        e = exp(s[j] - NPairExpShift(positive, max_all, max_pos));
        if (positive) {
          sum_pos += e;
        } else {
          sum_neg += e;
        }
      }
      w[j] = e;
    }
    sum_neg = BlockAllReduce(sum_neg, SumOp());
    sum_pos = BlockAllReduce(sum_pos, SumOp());
  }
  const NPairRowTerms terms = NPairRowTermsOf(finite, num_pos > 0, max_all,
      max_pos, sum_neg, sum_pos);
  if (threadIdx.x == 0) { row_loss[i] = terms.loss; }
  // Each thread rescales the entries it wrote; a row with nothing to sum
  // is terms' 0 or NaN throughout.
  for (int j = threadIdx.x; j < num; j += kThreads) {
    if (terms_to_sum) {
      const bool positive = j != i && labels[j] == label;
      w[j] *= positive ? terms.pos_scale : terms.neg_scale;
    } else {
      w[j] = terms.neg_scale;
    }
  }
}

/// The Recall@K tops (up to three; null where absent).
template <typename Dtype>
struct RecallTops { Dtype* top[3]; };

/// One block: the loss top (mean of row_loss) and the R@K tops.
template <typename Dtype>
__global__ void WriteTops(const int num, const double* row_loss,
    const int* ahead, const int num_k, Dtype* loss_top,
    const RecallTops<Dtype> recall_tops) {
  const int kRecallK[3] = {1, 5, 10};
  double loss = 0;
  int eligible = 0, hits[3] = {0, 0, 0};
  for (int i = threadIdx.x; i < num; i += kThreads) {
    loss += row_loss[i];
    if (num_k > 0 && ahead[i] >= 0) {
      ++eligible;
      for (int k = 0; k < num_k; ++k) { hits[k] += ahead[i] < kRecallK[k]; }
    }
  }
  loss = BlockAllReduce(loss, SumOp());
  eligible = BlockAllReduce(eligible, SumOp());
  for (int k = 0; k < 3; ++k) { hits[k] = BlockAllReduce(hits[k], SumOp()); }
  if (threadIdx.x != 0) { return; }
  loss_top[0] = loss / num;
  for (int k = 0; k < num_k; ++k) {
    recall_tops.top[k][0] =
        eligible ? Dtype(hits[k]) / eligible : Dtype(0);
  }
}

/// Forward's small device arrays, laid out in pair_scratch_ (free until
/// Backward): row_loss (N doubles), ahead (N ints), one RadixState.
struct Arena {
  double* row_loss;
  int* ahead;
  RadixState* radix;
};

template <typename Dtype>
Arena ArenaIn(const int num, Blob<Dtype>* scratch) {
  const size_t ahead_at = sizeof(double) * num;
  const size_t radix_at = (ahead_at + sizeof(int) * num + 15) / 16 * 16;
  const size_t bytes = radix_at + sizeof(RadixState);
  const int count =
      static_cast<int>((bytes + sizeof(Dtype) - 1) / sizeof(Dtype));
  if (scratch->count() < count) {
    // Only for tiny batches: N x N Dtypes already hold all of it from N = 26.
    scratch->Reshape(vector<int>(1, count));
  }
  char* base = reinterpret_cast<char*>(scratch->mutable_gpu_data());
  Arena arena;
  arena.row_loss = reinterpret_cast<double*>(base);
  arena.ahead = reinterpret_cast<int*>(base + ahead_at);
  arena.radix = reinterpret_cast<RadixState*>(base + radix_at);
  return arena;
}

/// RELATIVE_* thresholds of the positives (same_label) or negatives of every
/// query, LOCAL or GLOBAL.
template <typename Dtype>
void RelativeThresholds_gpu(const int num, const Dtype* sim,
    const Dtype* labels, const bool same_label, const bool global,
    const float sn, const Dtype empty_value, RadixState* state,
    Dtype* threshold) {
  if (!global) {
    // NOLINT_NEXT_LINE(whitespace/operators)
    RowRadixSelect<Dtype><<<num, kThreads>>>(num, sim, labels, same_label, sn,
        empty_value, threshold);
    CUDA_POST_KERNEL_CHECK;
    return;
  }
  caffe_gpu_memset(sizeof(RadixState), 0, state);
  const int top_shift = NPairRadixKey<Dtype>::kBits - 8;
  for (int shift = top_shift; shift >= 0; shift -= 8) {
    // NOLINT_NEXT_LINE(whitespace/operators)
    BatchHistogram<Dtype><<<num, kThreads>>>(num, sim, labels, same_label,
        shift, state);
    CUDA_POST_KERNEL_CHECK;
    // NOLINT_NEXT_LINE(whitespace/operators)
    BatchPickDigit<<<1, 1>>>(shift, shift == top_shift, sn, state);
    CUDA_POST_KERNEL_CHECK;
  }
  // NOLINT_NEXT_LINE(whitespace/operators)
  BatchBroadcast<Dtype><<<CAFFE_GET_BLOCKS(num), CAFFE_CUDA_NUM_THREADS>>>(
      num, state, empty_value, threshold);
  CUDA_POST_KERNEL_CHECK;
}

}  // namespace

template <typename Dtype>
void NPairMultiClassLossLayer<Dtype>::Forward_gpu(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  const NPairLossParameter& param = this->layer_param_.npair_loss_param();
  const int num = bottom[0]->shape(0);
  const int dim = bottom[0]->count(1);
  const Dtype* features = bottom[0]->gpu_data();
  const Dtype* labels = bottom[1]->gpu_data();
  const Arena arena = ArenaIn(num, &pair_scratch_);

  // S = X X^T, then exactly symmetric.
  Dtype* sim = sim_.mutable_gpu_data();
  caffe_gpu_gemm<Dtype>(CblasNoTrans, CblasTrans, num, num, dim, Dtype(1),
      features, features, Dtype(0), sim);
  const dim3 tiles((num + kTile - 1) / kTile, (num + kTile - 1) / kTile);
  const dim3 tile_threads(kTile, kTileRows);
  // NOLINT_NEXT_LINE(whitespace/operators)
  MirrorUpper<Dtype><<<tiles, tile_threads>>>(num, sim);
  CUDA_POST_KERNEL_CHECK;

  // Thresholds. RAND leaves its threshold alone, as Thresholds_cpu does.
  const NPairMiningMethod ap = param.ap_mining_method();
  const NPairMiningMethod an = param.an_mining_method();
  const NPairMiningMethod rand = NPairLossParameter_MiningMethod_RAND;
  const bool pos_extreme = ap != rand && !NPairIsRelative(ap);
  const bool neg_extreme = an != rand && !NPairIsRelative(an);
  const bool pos_global =
      param.ap_mining_region() == NPairLossParameter_MiningRegion_GLOBAL;
  const bool neg_global =
      param.an_mining_region() == NPairLossParameter_MiningRegion_GLOBAL;
  const int num_k = std::max(0, static_cast<int>(top.size()) - 2);
  Dtype* pos_threshold = pos_threshold_.mutable_gpu_data();
  Dtype* neg_threshold = neg_threshold_.mutable_gpu_data();
  if (pos_extreme || neg_extreme || num_k > 0) {
    // NOLINT_NEXT_LINE(whitespace/operators)
    RowExtremes<Dtype><<<num, kThreads>>>(num, sim, labels, pos_extreme,
        neg_extreme, num_k > 0, pos_threshold, neg_threshold, arena.ahead);
    CUDA_POST_KERNEL_CHECK;
  }
  if (pos_extreme && pos_global) {
    // NOLINT_NEXT_LINE(whitespace/operators)
    BatchExtreme<Dtype><<<1, kThreads>>>(num, true, pos_threshold);
    CUDA_POST_KERNEL_CHECK;
  }
  if (neg_extreme && neg_global) {
    // NOLINT_NEXT_LINE(whitespace/operators)
    BatchExtreme<Dtype><<<1, kThreads>>>(num, false, neg_threshold);
    CUDA_POST_KERNEL_CHECK;
  }
  const Dtype inf = HUGE_VAL;
  if (NPairIsRelative(ap)) {
    RelativeThresholds_gpu(num, sim, labels, true, pos_global,
        param.identsn(), -inf, arena.radix, pos_threshold);
  }
  if (NPairIsRelative(an)) {
    RelativeThresholds_gpu(num, sim, labels, false, neg_global,
        param.diffsn(), inf, arena.radix, neg_threshold);
  }

  // Loss, pair weights, and the tops.
  // NOLINT_NEXT_LINE(whitespace/operators)
  RowLossAndWeights<Dtype><<<num, kThreads>>>(num, sim, labels,
      pos_threshold, neg_threshold, ap, an, param.margin_ident(),
      param.margin_diff(), pair_weight_.mutable_gpu_data(), arena.row_loss);
  CUDA_POST_KERNEL_CHECK;
  RecallTops<Dtype> recall_tops = {{NULL, NULL, NULL}};
  for (int k = 0; k < num_k; ++k) {
    recall_tops.top[k] = top[1 + k]->mutable_gpu_data();
  }
  // NOLINT_NEXT_LINE(whitespace/operators)
  WriteTops<Dtype><<<1, kThreads>>>(num, arena.row_loss, arena.ahead, num_k,
      top[0]->mutable_gpu_data(), recall_tops);
  CUDA_POST_KERNEL_CHECK;
  if (top.size() > 1) {
    Dtype asum;
    caffe_gpu_asum(bottom[0]->count(), features, &asum);
    caffe_gpu_set(1, asum / num, top.back()->mutable_gpu_data());
  }
}

template <typename Dtype>
void NPairMultiClassLossLayer<Dtype>::Backward_gpu(
    const vector<Blob<Dtype>*>& top, const vector<bool>& propagate_down,
    const vector<Blob<Dtype>*>& bottom) {
  const int num = bottom[0]->shape(0);
  const Dtype alpha = GradientScale(top, propagate_down, num);
  if (!propagate_down[0]) { return; }
  const int dim = bottom[0]->count(1);
  // (G + G^T) X as one product: the transpose-add costs a pass over N x N,
  // a second product 2 N^2 D flops.
  Dtype* weight_sum = pair_scratch_.mutable_gpu_data();
  const dim3 tiles((num + kTile - 1) / kTile, (num + kTile - 1) / kTile);
  const dim3 tile_threads(kTile, kTileRows);
  // NOLINT_NEXT_LINE(whitespace/operators)
  AddTranspose<Dtype><<<tiles, tile_threads>>>(num, pair_weight_.gpu_data(),
      weight_sum);
  CUDA_POST_KERNEL_CHECK;
  caffe_gpu_gemm<Dtype>(CblasNoTrans, CblasNoTrans, num, dim, num, alpha,
      weight_sum, bottom[0]->gpu_data(), Dtype(0),
      bottom[0]->mutable_gpu_diff());
}

INSTANTIATE_LAYER_GPU_FUNCS(NPairMultiClassLossLayer);

}  // namespace caffe
