/* The CPU's single-precision peak, measured: fused multiply-adds on independent
 * registers, on the widest vectors the CPU has (chosen at run time), one loop per
 * thread. Prints "<instructions> <threads> <GFLOPS>".
 *
 *   cc -O2 -pthread fma_peak.c -o fma_peak && ./fma_peak 1
 *
 * Twelve independent chains cover the FMA latency times the FMA units of current
 * x86-64 cores (4-5 cycles x 2), so the loop runs at the units' throughput, which
 * bounds any GEMM's.
 */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHAINS 12
#define ITERATIONS 50000000L

static volatile float sink;

#define FMA_LOOP(vec, set1, fma, add, lanes)                             \
  vec acc[CHAINS];                                                       \
  const vec a = set1(0.9999999f), b = set1(1e-7f);                       \
  for (int c = 0; c < CHAINS; ++c) acc[c] = set1((float)c);              \
  for (long i = 0; i < ITERATIONS; ++i) {                                \
    _Pragma("GCC unroll 12") /* acc[] stays in registers */              \
    for (int c = 0; c < CHAINS; ++c) acc[c] = fma(acc[c], a, b);         \
  }                                                                      \
  for (int c = 1; c < CHAINS; ++c) acc[0] = add(acc[0], acc[c]);         \
  float out[lanes];                                                      \
  memcpy(out, &acc[0], sizeof(out));                                     \
  sink = out[0];                                                         \
  return 2.0 * lanes * CHAINS * ITERATIONS;

__attribute__((target("avx512f"))) static double Avx512(void) {
  FMA_LOOP(__m512, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps, 16)
}

__attribute__((target("avx2,fma"))) static double Avx2(void) {
  FMA_LOOP(__m256, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps, 8)
}

/* Without FMA: a multiply and an add per lane, the same two flops. */
static __m128 MulAdd(__m128 x, __m128 a, __m128 b) {
  return _mm_add_ps(_mm_mul_ps(x, a), b);
}
static double Sse(void) { FMA_LOOP(__m128, _mm_set1_ps, MulAdd, _mm_add_ps, 4) }

static double (*loop)(void);

static void* Run(void* flops) {
  *(double*)flops = loop();
  return NULL;
}

static double Now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

int main(int argc, char** argv) {
  const int threads = argc > 1 ? atoi(argv[1]) : 1;
  if (threads < 1 || threads > 1024) {
    fprintf(stderr, "fma_peak: threads must be 1 to 1024\n");
    return 2;
  }
  const char* isa;
  if (__builtin_cpu_supports("avx512f")) {
    loop = Avx512, isa = "avx512f";
  } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    loop = Avx2, isa = "avx2+fma";
  } else {
    loop = Sse, isa = "sse";
  }
  pthread_t tid[1024];
  double flops[1024];
  const double start = Now();
  for (int t = 0; t < threads; ++t) pthread_create(&tid[t], NULL, Run, &flops[t]);
  double total = 0;
  for (int t = 0; t < threads; ++t) {
    pthread_join(tid[t], NULL);
    total += flops[t];
  }
  printf("%s %d %.1f\n", isa, threads, total / (Now() - start) / 1e9);
  return 0;
}
