#ifndef CAFFE_UTIL_NPAIR_RADIX_SELECT_HPP_
#define CAFFE_UTIL_NPAIR_RADIX_SELECT_HPP_

/**
 * @file
 * The host-callable pieces of the CUDA path's radix select, which finds a
 * RELATIVE_* threshold (an order statistic of a row's or the batch's
 * similarities) without sorting: similarities map to unsigned keys of the
 * same order, and each pass fixes one 8-bit digit of the sought key from a
 * 256-bin histogram of the keys that match the digits fixed so far. The
 * histograms are built on the device (npair_gpu_radix_select.cu); the key
 * mapping, the digit choice and the state a batch-wide select keeps between
 * its passes are here, so a CPU test can run the passes against
 * std::nth_element.
 */

#include <string.h>

#include "caffe/util/npair_mining_rules.hpp"

namespace caffe {

/// Unsigned keys ordered as the similarities are (for non-NaN values; -0.0
/// keys just below +0.0): the sign bit flipped for positives, every bit for
/// negatives.
template <typename Dtype> struct NPairRadixKey;
template <> struct NPairRadixKey<float> {
  typedef unsigned int Key;
  static const int kBits = 32;
  static NPAIR_HOST_DEVICE Key Of(const float v) {
    Key u;
    memcpy(&u, &v, sizeof(u));  // NOLINT(caffe/alt_fn)
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  }
  static NPAIR_HOST_DEVICE float Value(const Key k) {
    const Key u = (k & 0x80000000u) ? (k & 0x7fffffffu) : ~k;
    float v;
    memcpy(&v, &u, sizeof(v));  // NOLINT(caffe/alt_fn)
    return v;
  }
};
template <> struct NPairRadixKey<double> {
  typedef unsigned long long Key;  // NOLINT(runtime/int)
  static const int kBits = 64;
  static NPAIR_HOST_DEVICE Key Of(const double v) {
    Key u;
    memcpy(&u, &v, sizeof(u));  // NOLINT(caffe/alt_fn)
    return (u >> 63) ? ~u : (u | (1ull << 63));
  }
  static NPAIR_HOST_DEVICE double Value(const Key k) {
    const Key u = (k >> 63) ? (k & ~(1ull << 63)) : ~k;
    double v;
    memcpy(&v, &u, sizeof(v));  // NOLINT(caffe/alt_fn)
    return v;
  }
};

/**
 * @brief One pass of the select: fixes the digit at `shift` to the bin that
 *        holds the sought rank.
 *
 * hist holds the 256 counts of digit `shift` among the keys whose higher
 * digits equal *prefix (under *mask). On the first pass the list's length n
 * is the histogram's total and the rank sought is NPairRelativePosition(n,
 * sn); an empty list sets *empty and ends the select. Afterwards *rank is
 * the rank among the keys that match the longer prefix.
 */
template <typename Count, typename Key>
NPAIR_HOST_DEVICE void NPairPickDigit(const Count* hist, const int shift,
    const bool first, const float sn, Key* prefix, Key* mask,
    long long* rank, int* empty) {  // NOLINT(runtime/int)
  if (first) {
    long long n = 0;  // NOLINT(runtime/int)
    for (int b = 0; b < 256; ++b) { n += hist[b]; }
    if (n == 0) {
      *empty = 1;
      return;
    }
    *rank = NPairRelativePosition(static_cast<int>(n), sn);
  }
  long long below = 0;  // NOLINT(runtime/int)
  int digit = 255;
  for (int b = 0; b < 256; ++b) {
    if (below + static_cast<long long>(hist[b]) > *rank) {  // NOLINT
      digit = b;
      break;
    }
    below += hist[b];
  }
  *rank -= below;
  *prefix |= static_cast<Key>(digit) << shift;
  *mask |= static_cast<Key>(255) << shift;
}

/**
 * @brief Where a batch-wide (GLOBAL) select stands between its passes, kept
 *        in device memory: the merged histogram of the current digit, the
 *        digits fixed so far (prefix under mask), the rank still sought among
 *        the keys that match them, and whether the list was empty.
 *
 * 64-bit throughout: the keys of double, and counts of up to the N (N - 1)
 * pairs of a batch.
 */
struct NPairRadixState {
  unsigned long long hist[256];  // NOLINT(runtime/int)
  unsigned long long prefix;     // NOLINT(runtime/int)
  unsigned long long mask;       // NOLINT(runtime/int)
  long long rank;                // NOLINT(runtime/int)
  int empty;
};

}  // namespace caffe

#endif  // CAFFE_UTIL_NPAIR_RADIX_SELECT_HPP_
