// CPU K-means step of W-OoD: assignment through a GEMM with an exactness guard, then the centroid
// sums and counts (schema in csrc/ops.cpp; Python side in ocr_kernels/wood/csrc_ops.py).
//
// Assignment. On data centred by mu (any vector; the caller passes the mean of x), a = x - mu and
// b_k = c_k - mu, the squared distance is s_k = |a|^2 + |b_k|^2 - 2 a.b_k. Tile by tile (in
// parallel), the rows are centred into a buffer that stays in L2, their products with every
// centroid computed (an AVX-512 kernel; at::mm without AVX-512) and the argmin taken right after.
//
// Exactness guard. Let u = 2^-24 (fp32 unit roundoff), alpha = |a|, beta_k = |b_k|, S_k the exact
// |x - c_k|^2 of the fp32 (or fp16/bf16) inputs, and s~_k the computed fl(fl(|a|^2 + |b_k|^2) -
// 2 fl(a.b_k)). Errors that are the same for every k (those of |a|^2 and of rounding a) do not
// change the argmin; call their sum e_n. Then |s~_k - e_n - S_k| <= E_k with
//   E_k = 2 [ (D + 2) u (beta_k^2 + 2 alpha beta_k) + u (alpha^2 + beta_k^2 + |s~_k|) ]:
// - |fl(a.b) - a.b| <= gamma_D sum |a_d b_d| <= gamma_D alpha beta (any summation order, FMA or
//   not; gamma_D = D u / (1 - D u)), and |fl(|b|^2) - |b|^2| <= gamma_D beta^2;
// - rounding b_k = fl(c_k - mu) moves |a - b_k|^2 by at most 2 u beta_k (alpha + |a - b_k|) +
//   O(u^2), and rounding a moves it by a common term plus at most 2 u alpha beta_k;
// - the two final operations add at most u (alpha^2 + beta_k^2) + u |s~_k|;
// - the factor 2 covers the O(u^2) terms and alpha, beta_k being themselves computed.
// The exact argmin k* has s~_k* - E_k* <= S_k* + e_n <= min_j (s~_j + E_j) = U. A point whose only
// centroid with s~_k - E_k <= U is k is therefore assigned k exactly; otherwise every centroid in
// that set is re-checked with direct differences in fp64 (the difference and the square of two
// fp32 values are exact in fp64; the sum's relative error is below D 2^-53), ties to the lowest
// index. So the assignment is that of exact arithmetic except between centroids whose exact
// squared distances agree to ~D 2^-53 relative.
//
// Bounds. For every point computed, upper = sqrt(s~_a + E_a + common) on its exact distance to
// its centroid a and lower = sqrt(min_{k != a} s~_k - E_k - common) on the distance to any other
// (common bounds the errors shared by every k, above). The next step, given how far each centroid
// moved (fp64, from the caller), moves them by the triangle inequality: upper + moved_a and
// lower - max_k moved_k; a point with upper < lower there provably keeps its centroid and skips
// the product (its squared distance is reported as upper^2 unless a cluster comes out empty).
//
// Sums. sums[k] = sum of the points assigned to k, accumulated in row order in fp32: bitwise what
// index_add_ / scatter_add_ give (the official W-OoD K-means), so the centroids do not depend on
// the thread count. A second, column-parallel pass does this (a row-parallel pass fused with the
// assignment would change the order of the additions).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "isa.h"

#if OCR_KERNELS_ISA_DISPATCH && defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>
#include <vector>

namespace wood {
namespace {

constexpr float kU = 1.0f / 16777216.0f;  // 2^-24

// Rows per tile (a multiple of the 6, 8 and 12 rows of the product kernels): the centred tile
// (rows x D fp32) about 128 KiB, so that it, the packed centroids and the [rows, K] products stay
// in L2 between the product and the argmin.
int64_t tile_rows(int64_t D) {
  const int64_t r = (32768 / std::max<int64_t>(D, 1)) / 24 * 24;
  return std::min<int64_t>(std::max<int64_t>(r, 24), 480);
}

#if OCR_KERNELS_ISA_DISPATCH && defined(__x86_64__)
// The AVX-512 product kernel runs where cpu/isa.h allows AVX-512 (OCR_KERNELS_CPU_ISA caps it);
// elsewhere the BLAS call (at::mm) computes the products.
bool use_avx512() { return ocr_kernels::cpu_isa::have_avx512(); }

// out[r, 0:16 NZ] (+)= a_r[d0:d1] . bt[d0:d1, 0:16 NZ] for R rows of a (leading dimension lda):
// R x NZ accumulators in registers, one broadcast per row and NZ loads of the packed block per
// coordinate.
template <int NZ, int R>
__attribute__((target("avx512f,fma"))) void block_product(const float* a, int64_t lda,
                                                          const float* bt, int64_t d0, int64_t d1,
                                                          float* out, int64_t ldo, bool first) {
  constexpr int W = 16 * NZ;
  __m512 acc[R][NZ];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int j = 0; j < NZ; ++j)
      acc[r][j] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(out + r * ldo + j * 16);
  for (int64_t d = d0; d < d1; ++d) {
    __m512 bv[NZ];
#pragma GCC unroll 4
    for (int j = 0; j < NZ; ++j) bv[j] = _mm512_loadu_ps(bt + d * W + j * 16);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const __m512 av = _mm512_set1_ps(a[r * lda + d]);
#pragma GCC unroll 4
      for (int j = 0; j < NZ; ++j) acc[r][j] = _mm512_fmadd_ps(av, bv[j], acc[r][j]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int j = 0; j < NZ; ++j) _mm512_storeu_ps(out + r * ldo + j * 16, acc[r][j]);
}

// Rows RMAX at a time, then the remainder with fewer rows.
template <int NZ, int RMAX>
void block_rows(const float* a, int64_t lda, int64_t R, const float* bt, int64_t d0, int64_t d1,
                float* out, int64_t ldo, bool first) {
  int64_t r = 0;
  for (; r + RMAX <= R; r += RMAX)
    block_product<NZ, RMAX>(a + r * lda, lda, bt, d0, d1, out + r * ldo, ldo, first);
  if constexpr (RMAX > 1) {
    if (r < R) block_rows<NZ, RMAX - 1>(a + r * lda, lda, R - r, bt, d0, d1, out + r * ldo, ldo, first);
  }
}

// a_r . b_k for the last K mod 16 centroids, along the coordinates.
__attribute__((target("avx512f,fma"))) float dot_avx512(const float* a, const float* b, int64_t D) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  int64_t d = 0;
  for (; d + 32 <= D; d += 32) {
    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + d), _mm512_loadu_ps(b + d), s0);
    s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + d + 16), _mm512_loadu_ps(b + d + 16), s1);
  }
  for (; d < D; d += 16) {
    const __mmask16 m = D - d >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (D - d)) - 1);
    s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + d), _mm512_maskz_loadu_ps(m, b + d), s0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

// [R, K] = a [R, D] (leading dimension lda) @ b^T: centroids in packed blocks of 64, then one
// block of 16, 32 or 48 (no lane wasted on padding), the last K mod 16 along the coordinates;
// coordinates in chunks of 64 so that a chunk of a block (<= 16 KiB) stays in L1 across the rows.
void tile_product_avx512(const float* a, int64_t lda, int64_t R, int64_t D, const float* packed,
                         const float* b, int64_t K, float* out, int64_t ldo) {
  constexpr int64_t kChunk = 64;
  int64_t col = 0;
  const float* bt = packed;
  while (K - col >= 16) {
    const int64_t nz = std::min<int64_t>(4, (K - col) / 16);
    for (int64_t d0 = 0; d0 < D; d0 += kChunk) {
      const int64_t d1 = std::min(D, d0 + kChunk);
      const bool first = d0 == 0;
      float* o = out + col;
      switch (nz) {
        case 4: block_rows<4, 6>(a, lda, R, bt, d0, d1, o, ldo, first); break;
        case 3: block_rows<3, 8>(a, lda, R, bt, d0, d1, o, ldo, first); break;
        case 2: block_rows<2, 12>(a, lda, R, bt, d0, d1, o, ldo, first); break;
        default: block_rows<1, 12>(a, lda, R, bt, d0, d1, o, ldo, first); break;
      }
    }
    bt += D * 16 * nz;
    col += 16 * nz;
  }
  for (int64_t r = 0; r < R; ++r)
    for (int64_t k = col; k < K; ++k) out[r * ldo + k] = dot_avx512(a + r * lda, b + k * D, D);
}
#else
bool use_avx512() { return false; }
void tile_product_avx512(const float*, int64_t, int64_t, int64_t, const float*, const float*, int64_t,
                         float*, int64_t) {}
#endif

// The centred centroids b [K, D], the first 16 floor(K / 16) of them transposed into the blocks
// tile_product_avx512 reads: 64 centroids a block, then one block of 16, 32 or 48.
std::vector<float> pack_centroids(const float* b, int64_t K, int64_t D) {
  std::vector<float> packed((K / 16) * 16 * D);
  float* dst = packed.data();
  for (int64_t col = 0; K - col >= 16;) {
    const int64_t w = 16 * std::min<int64_t>(4, (K - col) / 16);
    for (int64_t d = 0; d < D; ++d)
      for (int64_t j = 0; j < w; ++j) dst[d * w + j] = b[(col + j) * D + d];
    dst += w * D;
    col += w;
  }
  return packed;
}

// In fp64, eight interleaved partial sums (a fixed order: vectorisable without reassociation).
template <typename scalar_t>
double exact_sqdist(const scalar_t* x, const scalar_t* c, int64_t D) {
  double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t d = 0;
  for (; d + 8 <= D; d += 8)
    for (int j = 0; j < 8; ++j) {
      const double t = static_cast<double>(x[d + j]) - static_cast<double>(c[d + j]);
      lane[j] += t * t;
    }
  for (; d < D; ++d) {
    const double t = static_cast<double>(x[d]) - static_cast<double>(c[d]);
    lane[0] += t * t;
  }
  return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

struct Centred {
  const float* mu;       // [D]
  at::Tensor b;          // centred centroids [K, D] fp32
  bool avx512;           // the product kernel here (else at::mm)
  const float* packed;   // its layout of b
  const float* cn;       // |b_k|^2
  int64_t K, D;
  // Bounds carried from the previous step (nullptr: none): its assignment, its [N, 2] bounds
  // (upper on the distance to the assigned centroid, lower on the distance to any other) and how
  // far each centroid moved since; `bounds` receives this step's.
  const int64_t* prev_idx;
  const double* prev_bounds;
  const double* moved;
  double max_moved;
  double* bounds;
};

// Slack on the bounds for the rounding of the square roots and additions in fp64 (relative
// errors ~1e-16): far below the fp32 error terms they carry.
constexpr double kUp = 1.0 + 1e-9, kDown = 1.0 - 1e-9;

template <typename scalar_t>
void assign_tiles(const scalar_t* xp, const scalar_t* cp, const Centred& C, int64_t N, int64_t T,
                  int64_t t0, int64_t t1, int64_t* idx, float* mind) {
  const int64_t K = C.K, D = C.D;
  const int64_t ldo = K;
  // rows of the centred tile 64 bytes apart from a multiple of 4 KiB: the six rows a product
  // step reads do not share an L1 set
  const int64_t lda = D % 1024 == 0 ? D + 16 : D;
  at::Tensor xc_buf = at::empty({T, lda}, C.b.options());
  at::Tensor xc = xc_buf.narrow(1, 0, D);
  at::Tensor prod = at::empty({T, ldo}, C.b.options());
  std::vector<float> xn(T), alpha(T), p(K), q(K), lower(K);
  for (int64_t k = 0; k < K; ++k) {
    p[k] = 2.0f * ((D + 2) * kU + kU) * C.cn[k];
    q[k] = 2.0f * (D + 2) * kU * 2.0f * std::sqrt(C.cn[k]);
  }
  std::vector<int64_t> rows(T);
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t r0 = t * T, rend = std::min(N, r0 + T);
    // Points the carried bounds prove still nearest to their centroid (upper < lower: the
    // triangle inequality, distances moved by at most the centroids' moves) keep it unread.
    int64_t R = 0;
    for (int64_t n = r0; n < rend; ++n) {
      if (C.prev_idx != nullptr) {
        const int64_t k = C.prev_idx[n];
        const double up = (C.prev_bounds[2 * n] + C.moved[k]) * kUp;
        const double lo = (C.prev_bounds[2 * n + 1] - C.max_moved) * kDown;
        if (up < lo) {
          idx[n] = k;
          mind[n] = static_cast<float>(up * up);
          C.bounds[2 * n] = up;
          C.bounds[2 * n + 1] = lo;
          continue;
        }
      }
      rows[R++] = n;
    }
    if (R == 0) continue;
    float* a = xc.data_ptr<float>();
    for (int64_t i = 0; i < R; ++i) {
      const scalar_t* row = xp + rows[i] * D;
      float* ai = a + i * lda;
      float s = 0.0f;
#pragma omp simd reduction(+ : s)
      for (int64_t d = 0; d < D; ++d) {
        const float v = static_cast<float>(row[d]) - C.mu[d];
        ai[d] = v;
        s += v * v;
      }
      xn[i] = s;
      alpha[i] = std::sqrt(s);
    }
    float* sbuf = prod.data_ptr<float>();
    if (C.avx512) {
      tile_product_avx512(a, lda, R, D, C.packed, C.b.data_ptr<float>(), K, sbuf, ldo);
    } else {
      at::Tensor o = prod.narrow(0, 0, R);
      at::mm_out(o, xc.narrow(0, 0, R), C.b.t());
    }
    for (int64_t i = 0; i < R; ++i) {
      float* si = sbuf + i * ldo;
      const float x2 = xn[i], al = alpha[i];
      // s~_k in place, lower_k = s~_k - E_k and U = min_k (s~_k + E_k)
      float upper = std::numeric_limits<float>::infinity();
      float* lo = lower.data();
#pragma omp simd reduction(min : upper)
      for (int64_t k = 0; k < K; ++k) {
        const float v = std::fma(-2.0f, si[k], x2 + C.cn[k]);
        const float e = p[k] + q[k] * al + 2.0f * kU * (x2 + std::fabs(v));
        si[k] = v;
        lo[k] = v - e;
        upper = std::min(upper, v + e);
      }
      // the centroids that may be the exact argmin
      int64_t count = 0;
#pragma omp simd reduction(+ : count)
      for (int64_t k = 0; k < K; ++k) count += lo[k] <= upper ? 1 : 0;
      int64_t first = 0;
      while (first < K && !(lo[first] <= upper)) ++first;
      const int64_t n = rows[i];
      int64_t best_k = std::min<int64_t>(first, K - 1);  // first == K only for NaN input
      if (count == 1) {  // the only candidate: the exact argmin
        mind[n] = std::max(si[first], 0.0f);
      } else {
        double best = std::numeric_limits<double>::infinity();
        for (int64_t k = best_k; k < K; ++k) {
          if (!(lo[k] <= upper)) continue;
          const double ex = exact_sqdist(xp + n * D, cp + k * D, D);
          if (ex < best) {
            best = ex;
            best_k = k;
          }
        }
        mind[n] = static_cast<float>(best);
      }
      idx[n] = best_k;
      if (C.bounds != nullptr) {
        // absolute bounds: E_k plus the errors common to every k (those of |a|^2 and of rounding
        // a: at most (D + 2) u |a|^2 + 2 u |a|^2, doubled)
        const double common = 2.0 * ((D + 4) * kU) * x2;
        double other = std::numeric_limits<double>::infinity();
        for (int64_t k = 0; k < K; ++k)
          if (k != best_k) other = std::min(other, static_cast<double>(lo[k]));
        const double e_best = static_cast<double>(si[best_k]) - lo[best_k];
        C.bounds[2 * n] = std::sqrt(std::max(0.0, si[best_k] + e_best + common)) * kUp;
        C.bounds[2 * n + 1] = std::sqrt(std::max(0.0, other - common)) * kDown;
      }
    }
  }
}

// sums[k, d] += x[n, d] over n in increasing order, for the columns [d0, d1) of this task.
// One add per element in row order, so every vector width gives the same bits; compiled per ISA
// variant (cpu/isa.h) because the baseline build's 4-wide loop cannot keep up with memory.
template <typename scalar_t>
__attribute__((always_inline)) inline void column_sums_body(const scalar_t* xp, const int64_t* idx,
                                                            int64_t N, int64_t D, int64_t d0,
                                                            int64_t d1, float* sums) {
  for (int64_t n = 0; n < N; ++n) {
    const scalar_t* row = xp + n * D;
    float* out = sums + idx[n] * D;
#pragma omp simd
    for (int64_t d = d0; d < d1; ++d) out[d] += static_cast<float>(row[d]);
  }
}

#if OCR_KERNELS_ISA_DISPATCH
template <typename scalar_t>
OCR_AVX512_TARGET void column_sums_avx512(const scalar_t* xp, const int64_t* idx, int64_t N,
                                          int64_t D, int64_t d0, int64_t d1, float* sums) {
  column_sums_body(xp, idx, N, D, d0, d1, sums);
}
template <typename scalar_t>
OCR_AVX2_TARGET void column_sums_avx2(const scalar_t* xp, const int64_t* idx, int64_t N, int64_t D,
                                      int64_t d0, int64_t d1, float* sums) {
  column_sums_body(xp, idx, N, D, d0, d1, sums);
}
#endif

template <typename scalar_t>
void column_sums(const scalar_t* xp, const int64_t* idx, int64_t N, int64_t D, int64_t d0, int64_t d1,
                 float* sums) {
#if OCR_KERNELS_ISA_DISPATCH
  if (ocr_kernels::cpu_isa::have_avx512()) return column_sums_avx512(xp, idx, N, D, d0, d1, sums);
  if (ocr_kernels::cpu_isa::have_avx2()) return column_sums_avx2(xp, idx, N, D, d0, d1, sums);
#endif
  column_sums_body(xp, idx, N, D, d0, d1, sums);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> kmeans_step_cpu(
    const at::Tensor& x_, const at::Tensor& c_, const at::Tensor& mu_, bool with_sums,
    const c10::optional<at::Tensor>& prev_idx_, const c10::optional<at::Tensor>& prev_bounds_,
    const c10::optional<at::Tensor>& moved_) {
  TORCH_CHECK(x_.dim() == 2 && c_.dim() == 2 && x_.size(1) == c_.size(1),
              "wood_kmeans_step: expected [N, D] and [K, D] tensors, got ", x_.sizes(), " and ", c_.sizes());
  TORCH_CHECK(x_.scalar_type() == c_.scalar_type(), "wood_kmeans_step: dtypes differ (",
              x_.scalar_type(), " and ", c_.scalar_type(), ")");
  const auto st = x_.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kHalf || st == at::kBFloat16,
              "wood_kmeans_step: expected fp32, fp16 or bf16 points (fp64 uses wood_assign), got ", st);
  TORCH_CHECK(mu_.dim() == 1 && mu_.size(0) == x_.size(1), "wood_kmeans_step: mu must be [D]");
  const at::Tensor x = x_.contiguous(), c = c_.contiguous();
  const at::Tensor mu = mu_.to(at::kFloat).contiguous();
  const int64_t N = x.size(0), K = c.size(0), D = x.size(1);
  TORCH_CHECK(K >= 1, "wood_kmeans_step: needs at least one centroid");
  const auto f32 = x.options().dtype(at::kFloat);
  at::Tensor idx = at::empty({N}, x.options().dtype(at::kLong));
  at::Tensor mind = at::empty({N}, f32);
  at::Tensor sums = at::zeros({with_sums ? K : 0, D}, f32);
  at::Tensor counts = at::zeros({with_sums ? K : 0}, f32);
  at::Tensor bounds = at::empty({N, 2}, x.options().dtype(at::kDouble));
  const bool carried = prev_idx_.has_value() && prev_bounds_.has_value() && moved_.has_value();
  at::Tensor prev_idx, prev_bounds, moved;
  if (carried) {
    prev_idx = prev_idx_->contiguous();
    prev_bounds = prev_bounds_->to(at::kDouble).contiguous();
    moved = moved_->to(at::kDouble).contiguous();
    TORCH_CHECK(prev_idx.scalar_type() == at::kLong && prev_idx.numel() == N && prev_bounds.numel() == 2 * N &&
                    moved.numel() == K,
                "wood_kmeans_step: prev_idx [N] int64, prev_bounds [N, 2] and moved [K] expected");
  }
  // centred centroids, their squared norms and (AVX-512) their packed layout: K x D, small
  Centred C;
  C.b = (c.to(at::kFloat) - mu).contiguous();
  C.mu = mu.data_ptr<float>();
  C.K = K;
  C.D = D;
  std::vector<float> cn(K);
  {
    const float* b = C.b.data_ptr<float>();
    for (int64_t k = 0; k < K; ++k) {
      float s = 0.0f;
#pragma omp simd reduction(+ : s)
      for (int64_t d = 0; d < D; ++d) s += b[k * D + d] * b[k * D + d];
      cn[k] = s;
    }
  }
  C.cn = cn.data();
  C.avx512 = use_avx512();
  std::vector<float> packed;
  if (C.avx512) packed = pack_centroids(C.b.data_ptr<float>(), K, D);
  C.packed = packed.data();
  C.prev_idx = carried ? prev_idx.data_ptr<int64_t>() : nullptr;
  C.prev_bounds = carried ? prev_bounds.data_ptr<double>() : nullptr;
  C.moved = carried ? moved.data_ptr<double>() : nullptr;
  C.max_moved = carried && K > 0 ? moved.max().item<double>() : 0.0;
  C.bounds = bounds.data_ptr<double>();
  if (N == 0) return {idx, mind, sums, counts, bounds};
  const int64_t T = tile_rows(D);
  const int64_t tiles = (N + T - 1) / T;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, st, "wood_kmeans_step_cpu", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* cp = c.data_ptr<scalar_t>();
    int64_t* ip = idx.data_ptr<int64_t>();
    float* mp = mind.data_ptr<float>();
    at::parallel_for(0, tiles, 1, [&](int64_t t0, int64_t t1) {
      assign_tiles(xp, cp, C, N, T, t0, t1, ip, mp);
    });
    if (with_sums) {
      float* sp = sums.data_ptr<float>();
      at::parallel_for(0, (D + 15) / 16, 1, [&](int64_t b0, int64_t b1) {
        column_sums(xp, ip, N, D, b0 * 16, std::min(D, b1 * 16), sp);
      });
      float* cnt = counts.data_ptr<float>();
      std::vector<int64_t> h(K, 0);
      for (int64_t n = 0; n < N; ++n) ++h[ip[n]];
      for (int64_t k = 0; k < K; ++k) cnt[k] = static_cast<float>(h[k]);
      // An empty cluster is re-seeded from the points farthest from their centroid: then the
      // points the bounds skipped need their true squared distance, not the bound.
      if (carried && std::find(h.begin(), h.end(), 0) != h.end()) {
        at::parallel_for(0, N, 64, [&](int64_t n0, int64_t n1) {
          for (int64_t n = n0; n < n1; ++n)
            if (C.prev_idx[n] == ip[n] && C.bounds[2 * n] < C.bounds[2 * n + 1])
              mp[n] = static_cast<float>(exact_sqdist(xp + n * D, cp + ip[n] * D, D));
        });
      }
    }
  });
  return {idx, mind, sums, counts, bounds};
}

}  // namespace

TORCH_LIBRARY_IMPL(ocr_kernels, CPU, m) { m.impl("wood_kmeans_step", &kmeans_step_cpu); }

}  // namespace wood
