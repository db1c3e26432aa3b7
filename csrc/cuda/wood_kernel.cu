// CUDA kernels of the W-OoD distance ops. Only CUDA headers and our own headers are included; the
// per-pair math (direct differences, the 0-at-0 gradient rule, the argmin tie rule) is
// csrc/wood_pixel.h, shared with the CPU kernels.
//
// Layout of the work: one warp per (row, centroid) pair or per point; the 32 lanes stride over D
// (coalesced loads) and combine their partial sums with shuffles. The losses' shapes (B = 16,
// C + K = 70, D = 2048) are latency-bound, so one launch per op and no host sync matter more
// than FLOPs; the Triton backend has the tl.dot path for large K-means problems.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "../wood_pixel.h"
#include "wood_launch.h"

namespace wood {
namespace {

constexpr int kWarp = 32;
constexpr int kThreads = 256;

struct Cvt {
  __device__ __forceinline__ float operator()(float v) const { return v; }
  __device__ __forceinline__ double operator()(double v) const { return v; }
  __device__ __forceinline__ float operator()(__half v) const { return __half2float(v); }
  __device__ __forceinline__ float operator()(__nv_bfloat16 v) const { return __bfloat162float(v); }
};

template <typename T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };

template <typename acc_t>
__device__ __forceinline__ acc_t warp_sum(acc_t v) {
  for (int o = kWarp / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <typename T> __device__ __forceinline__ T from_acc(float v);
template <> __device__ __forceinline__ float from_acc<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_acc<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <typename T> __device__ __forceinline__ T from_acc(double v) { return v; }

template <typename T>
__global__ void distances_kernel(const T* __restrict__ x, const T* __restrict__ c,
                                 typename Acc<T>::type* __restrict__ out, int64_t N, int64_t K,
                                 int64_t D) {
  using acc_t = typename Acc<T>::type;
  const int64_t pair = (int64_t)blockIdx.x * (kThreads / kWarp) + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (pair >= N * K) return;  // whole warps leave together
  const int64_t n = pair / K, k = pair - n * K;
  acc_t s = sqdist_partial<acc_t>(x + n * D, c + k * D, lane, D, kWarp, Cvt());
  s = warp_sum(s);
  if (lane == 0) out[pair] = root(s);
}

// One thread per output element (i, d): coalesced over d; w[i, j] and dist[i, j] are the same
// for the whole row and come from cache.
template <typename T>
__global__ void weighted_diff_kernel(const T* __restrict__ a, const T* __restrict__ b,
                                     const typename Acc<T>::type* __restrict__ w, int64_t sw0,
                                     int64_t sw1, const typename Acc<T>::type* __restrict__ dist,
                                     int64_t sd0, int64_t sd1,
                                     const typename Acc<T>::type* __restrict__ gout,
                                     T* __restrict__ out, int64_t NA, int64_t J, int64_t D) {
  using acc_t = typename Acc<T>::type;
  const int64_t i = blockIdx.x;  // rows on x: up to 2^31 - 1 of them (y and z stop at 65535)
  const int64_t d = (int64_t)blockIdx.y * kThreads + threadIdx.x;
  if (i >= NA || d >= D) return;
  const acc_t g0 = *gout;
  Cvt cvt;
  const acc_t ad = cvt(a[i * D + d]);
  acc_t acc = acc_t(0);
  for (int64_t j = 0; j < J; ++j) {
    const acc_t g = grad_coef(g0, w[i * sw0 + j * sw1], dist[i * sd0 + j * sd1]);
    if (g != acc_t(0)) acc += g * (ad - cvt(b[j * D + d]));
  }
  out[i * D + d] = from_acc<T>(acc);
}

template <typename T>
__global__ void assign_kernel(const T* __restrict__ x, const T* __restrict__ c,
                              int64_t* __restrict__ idx, typename Acc<T>::type* __restrict__ mind,
                              int64_t N, int64_t K, int64_t D) {
  using acc_t = typename Acc<T>::type;
  const int64_t n = (int64_t)blockIdx.x * (kThreads / kWarp) + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (n >= N) return;
  acc_t best = acc_t(1) / acc_t(0);  // +inf
  int64_t best_k = 0;
  for (int64_t k = 0; k < K; ++k) {
    // every lane holds the full sum after the butterfly, so all lanes take the same branch
    const acc_t sq = warp_sum(sqdist_partial<acc_t>(x + n * D, c + k * D, lane, D, kWarp, Cvt()));
    if (closer(sq, best)) {
      best = sq;
      best_k = k;
    }
  }
  if (lane == 0) {
    idx[n] = best_k;
    mind[n] = best;
  }
}

int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

template <typename F>
void by_dtype(int dtype, F&& f) {
  switch (dtype) {
    case ocr_kernels::DTYPE_F32: f(float()); break;
    case ocr_kernels::DTYPE_F64: f(double()); break;
    case ocr_kernels::DTYPE_F16: f(__half()); break;
    case ocr_kernels::DTYPE_BF16: f(__nv_bfloat16()); break;
    default: break;
  }
}

}  // namespace

void launch_distances(const void* x, const void* c, void* out, int64_t N, int64_t K, int64_t D,
                      int dtype, cudaStream_t stream) {
  if (N * K == 0) return;
  const int64_t blocks = cdiv(N * K, kThreads / kWarp);
  by_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    distances_kernel<T><<<(unsigned)blocks, kThreads, 0, stream>>>(
        static_cast<const T*>(x), static_cast<const T*>(c),
        static_cast<typename Acc<T>::type*>(out), N, K, D);
  });
}

void launch_weighted_diff(const void* a, const void* b, const void* w, int64_t sw0, int64_t sw1,
                          const void* dist, int64_t sd0, int64_t sd1, const void* gout, void* out,
                          int64_t NA, int64_t J, int64_t D, int dtype, cudaStream_t stream) {
  if (NA * D == 0) return;
  const dim3 grid((unsigned)NA, (unsigned)cdiv(D, kThreads));
  by_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    using acc_t = typename Acc<T>::type;
    weighted_diff_kernel<T><<<grid, kThreads, 0, stream>>>(
        static_cast<const T*>(a), static_cast<const T*>(b), static_cast<const acc_t*>(w), sw0, sw1,
        static_cast<const acc_t*>(dist), sd0, sd1, static_cast<const acc_t*>(gout),
        static_cast<T*>(out), NA, J, D);
  });
}

void launch_assign(const void* x, const void* c, int64_t* idx, void* mind, int64_t N, int64_t K,
                   int64_t D, int dtype, cudaStream_t stream) {
  if (N == 0) return;
  const int64_t blocks = cdiv(N, kThreads / kWarp);
  by_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    assign_kernel<T><<<(unsigned)blocks, kThreads, 0, stream>>>(
        static_cast<const T*>(x), static_cast<const T*>(c), idx,
        static_cast<typename Acc<T>::type*>(mind), N, K, D);
  });
}

}  // namespace wood
