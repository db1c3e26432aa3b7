// CUDA kernels of the OCR ops: one thread per pixel running ocr_pixel.h's pixel_forward /
// pixel_backward (the same code the CPU op _pixelwise_seg_ocr runs in CI). Consecutive threads
// take consecutive pixels, so reads of NCHW logits are coalesced for every class; fp32 math
// (fp64 for fp64), 64-bit offsets, grid-stride loops, the caller's stream, no synchronisation.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "ocr_launch.h"

namespace ocr {
namespace {

__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }
__device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename scalar_t>
__device__ __forceinline__ scalar_t from_acc(float x);
template <>
__device__ __forceinline__ float from_acc<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_acc<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
template <typename scalar_t>
__device__ __forceinline__ scalar_t from_acc(double x) { return x; }

constexpr int kThreads = 256;

template <typename scalar_t, typename acc_t, bool CE>
__global__ void __launch_bounds__(kThreads) forward_kernel(CudaArgs A) {
  const scalar_t* z = static_cast<const scalar_t*>(A.z);
  const acc_t* prior = static_cast<const acc_t*>(A.prior);
  acc_t* ocr_out = static_cast<acc_t*>(A.ocr_out);
  acc_t* ce_out = static_cast<acc_t*>(A.ce_out);
  const int64_t N = A.zl.N, total = A.zl.B * N;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t b = i / N, p = i - b * N;
    const scalar_t* zp = z + b * A.zl.sB + p * A.zl.sN;
    const int64_t sC = A.zl.sC;
    auto zf = [&](int64_t k) { return static_cast<acc_t>(to_acc(zp[k * sC])); };
    const int64_t t = CE ? A.target[b * A.tl.sB + p * A.tl.sN] : 0;
    acc_t ce = 0;
    const acc_t l = pixel_forward<acc_t>(zf, A.ic + b * A.zl.C1, prior, A.zl.C1, (acc_t)A.margin,
                                         (acc_t)A.threshold, A.group, A.pixels, CE, t,
                                         A.ignore_index, &ce);
    ocr_out[i] = l;
    if (CE) ce_out[i] = ce;
  }
}

template <typename scalar_t, typename acc_t, bool CE>
__global__ void __launch_bounds__(kThreads) backward_kernel(CudaArgs A) {
  const scalar_t* z = static_cast<const scalar_t*>(A.z);
  scalar_t* grad = static_cast<scalar_t*>(A.grad);
  const acc_t* prior = static_cast<const acc_t*>(A.prior);
  const acc_t* loss = static_cast<const acc_t*>(A.loss);
  const acc_t* g_ocr = static_cast<const acc_t*>(A.g_ocr);
  const acc_t* g_ce = static_cast<const acc_t*>(A.g_ce);
  const int64_t N = A.zl.N, total = A.zl.B * N;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t b = i / N, p = i - b * N;
    const scalar_t* zp = z + b * A.zl.sB + p * A.zl.sN;
    scalar_t* gp = grad + b * A.gl.sB + p * A.gl.sN;
    const int64_t sC = A.zl.sC, gC = A.gl.sC;
    auto zf = [&](int64_t k) { return static_cast<acc_t>(to_acc(zp[k * sC])); };
    auto store = [&](int64_t k, acc_t v) { gp[k * gC] = from_acc<scalar_t>(v); };
    int64_t t = 0;
    acc_t gce = 0;
    if (CE) {
      t = A.target[b * A.tl.sB + p * A.tl.sN];
      gce = t == A.ignore_index ? acc_t(0) : g_ce[b * A.gcl.sB + p * A.gcl.sN];
    }
    pixel_backward<acc_t>(zf, store, A.ic + b * A.zl.C1, prior, A.zl.C1, (acc_t)A.threshold,
                          A.group, A.pixels, loss[b * A.ll.sB + p * A.ll.sN],
                          g_ocr[b * A.gol.sB + p * A.gol.sN], gce, t);
  }
}

int blocks_for(int64_t total) {
  int64_t blocks = (total + kThreads - 1) / kThreads;
  return (int)(blocks < (1 << 20) ? (blocks > 0 ? blocks : 1) : (1 << 20));
}

template <typename scalar_t, typename acc_t>
cudaError_t launch_typed(const CudaArgs& A, bool backward, cudaStream_t stream) {
  const int64_t total = A.zl.B * A.zl.N;
  if (total == 0) return cudaSuccess;
  const int blocks = blocks_for(total);
  const bool ce = A.target != nullptr;
  if (backward) {
    if (ce) backward_kernel<scalar_t, acc_t, true><<<blocks, kThreads, 0, stream>>>(A);
    else backward_kernel<scalar_t, acc_t, false><<<blocks, kThreads, 0, stream>>>(A);
  } else {
    if (ce) forward_kernel<scalar_t, acc_t, true><<<blocks, kThreads, 0, stream>>>(A);
    else forward_kernel<scalar_t, acc_t, false><<<blocks, kThreads, 0, stream>>>(A);
  }
  return cudaGetLastError();
}

cudaError_t launch(const CudaArgs& A, bool backward, cudaStream_t stream) {
  switch (A.dtype) {
    case ocr_kernels::DTYPE_F32: return launch_typed<float, float>(A, backward, stream);
    case ocr_kernels::DTYPE_F64: return launch_typed<double, double>(A, backward, stream);
    case ocr_kernels::DTYPE_F16: return launch_typed<__half, float>(A, backward, stream);
    case ocr_kernels::DTYPE_BF16: return launch_typed<__nv_bfloat16, float>(A, backward, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace

cudaError_t launch_ocr_forward(const CudaArgs& args, cudaStream_t stream) {
  return launch(args, false, stream);
}

cudaError_t launch_ocr_backward(const CudaArgs& args, cudaStream_t stream) {
  return launch(args, true, stream);
}

}  // namespace ocr
