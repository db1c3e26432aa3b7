// Per-pair math of the W-OoD distance ops, shared by the CPU kernels (cpu/wood_kernel.cpp) and
// the CUDA kernels (cuda/wood_kernel.cu), so that both backends compute the same thing in the
// same way. Plain C++ without ATen: it compiles under g++ and under nvcc.
//
// Accuracy: a squared distance is always a sum of squared *direct differences* (a_d - b_d) in the
// accumulation type (fp32; fp64 for fp64), never |a|^2 + |b|^2 - 2 a.b, which cancels when the
// features have large norms (post-ReLU pooled features do).
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define WOOD_HD __host__ __device__ __forceinline__
#else
#include <cmath>
#if defined(__GNUC__)
// always_inline: the CPU kernel compiles its fp32 loops for several ISAs (cpu/isa.h); only an
// inlined body is vectorised for each variant's ISA.
#define WOOD_HD inline __attribute__((always_inline))
#else
#define WOOD_HD inline
#endif
#endif

#if !defined(__CUDACC__) && defined(_OPENMP)
#define WOOD_SIMD_SUM _Pragma("omp simd reduction(+ : s)")
#define WOOD_SIMD _Pragma("omp simd")
#else
#define WOOD_SIMD_SUM
#define WOOD_SIMD
#endif

namespace wood {

// Partial squared distance over coordinates begin, begin + step, ... < end (a CUDA lane takes
// every 32nd coordinate; the CPU takes all of them with step 1). `cvt` widens one element.
template <typename acc_t, typename scalar_t, typename Cvt>
WOOD_HD acc_t sqdist_partial(const scalar_t* a, const scalar_t* b, int64_t begin, int64_t end,
                             int64_t step, Cvt cvt) {
  acc_t s = acc_t(0);
#if !defined(__CUDA_ARCH__)
  if (step == 1) {
    // The CPU case: 256 bytes of independent partial sums (eight 8-lane chains), so that the
    // loop is not bound by the latency of one accumulator; fixed order, then a pairwise tree.
    constexpr int L = 256 / static_cast<int>(sizeof(acc_t));
    acc_t lane[L] = {};
    int64_t d = begin;
    for (; d + L <= end; d += L) {
      WOOD_SIMD
      for (int j = 0; j < L; ++j) {
        const acc_t t = cvt(a[d + j]) - cvt(b[d + j]);
        lane[j] += t * t;
      }
    }
    for (int j = 0; d < end; ++d, ++j) {
      const acc_t t = cvt(a[d]) - cvt(b[d]);
      lane[j] += t * t;
    }
    for (int w = L / 2; w >= 1; w /= 2) {
      WOOD_SIMD
      for (int j = 0; j < w; ++j) lane[j] += lane[j + w];
    }
    return lane[0];
  }
#endif
  for (int64_t d = begin; d < end; d += step) {
    const acc_t t = cvt(a[d]) - cvt(b[d]);
    s += t * t;
  }
  return s;
}

WOOD_HD float root(float v) {
#if defined(__CUDA_ARCH__)
  return __fsqrt_rn(v);  // correctly rounded even under --use_fast_math
#else
  return std::sqrt(v);
#endif
}
WOOD_HD double root(double v) {
#if defined(__CUDA_ARCH__)
  return __dsqrt_rn(v);
#else
  return std::sqrt(v);
#endif
}

// d(dist)/d(a) = (a - b) / dist, scaled by the upstream gradient: the coefficient of (a - b).
// The gradient of |.| at 0 is taken as 0; the test comes before the division, so 0 * inf and
// 0 / 0 never appear. A NaN distance (a NaN feature) fails `== 0` and gives NaN, as it should.
template <typename acc_t>
WOOD_HD acc_t grad_coef(acc_t gout, acc_t w, acc_t dist) {
  return dist == acc_t(0) ? acc_t(0) : gout * w / dist;
}

// acc[d] += g * (a_d - b_d) for d = begin, begin + step, ... < end.
template <typename acc_t, typename scalar_t, typename Cvt>
WOOD_HD void accumulate_diff(acc_t* acc, const scalar_t* a, const scalar_t* b, acc_t g,
                             int64_t begin, int64_t end, int64_t step, Cvt cvt) {
#if !defined(__CUDA_ARCH__)
  if (step == 1) {
    WOOD_SIMD
    for (int64_t d = begin; d < end; ++d) acc[d] += g * (cvt(a[d]) - cvt(b[d]));
    return;
  }
#endif
  for (int64_t d = begin; d < end; d += step) acc[d] += g * (cvt(a[d]) - cvt(b[d]));
}

// The assignment rule of K-means: strictly smaller wins, so ties keep the lowest index when
// centroids are visited in increasing order.
template <typename acc_t>
WOOD_HD bool closer(acc_t sq, acc_t best) {
  return sq < best;
}

}  // namespace wood
