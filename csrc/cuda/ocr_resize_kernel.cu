// CUDA kernels of the OCR ops with the bilinear upsampling fused in. Two paths, chosen by
// resize_plan (csrc/ocr_resize_thread.h), the same choice the CPU op _pixelwise_seg_ocr_resized
// makes when it runs these kernels' code in CI:
// - fast (the block's shared memory within kResizeFastSmem): ocr_resize_thread.h's block functions
//   (ocr_thread.h's per-thread OCR code on logits interpolated from a shared-memory row; backward
//   one block per cell row, reduced in shared memory, then a gather of two entries per
//   low-resolution logit; ocr_loss's rows with few pixels with a gradient run only the warps
//   that hold them). Blocks: one wave of resident blocks striding over the rows / cells;
// - generic (any C+1), ocr_resize_pixel.h's per-thread functions:
//   forward  one thread per output pixel, its C+1 logits interpolated from the four source
//            pixels as they are read (consecutive threads take consecutive output columns, which
//            read the same or neighbouring source columns);
//   backward one warp per cell (the output pixels sharing a top-left source pixel): each lane one
//            pixel's gradient into a shared-memory column, then a per-class sum over the batch into
//            the cell's four corner entries; a second kernel gathers, per low-resolution logit,
//            the corner entries that feed it in a fixed order. No float atomics: the gradient is
//            bitwise reproducible. fp32 math (fp64 for fp64), 64-bit offsets, grid-stride loops,
//            the caller's stream, no synchronisation.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "../ocr_resize_thread.h"
#include "ocr_resize_launch.h"

namespace ocr {
namespace {

struct LoadF32 {
  __device__ __forceinline__ float operator()(float x) const { return x; }
};
struct LoadF64 {
  __device__ __forceinline__ double operator()(double x) const { return x; }
};
struct LoadF16 {
  __device__ __forceinline__ float operator()(__half x) const { return __half2float(x); }
};
struct LoadBF16 {
  __device__ __forceinline__ float operator()(__nv_bfloat16 x) const { return __bfloat162float(x); }
};

__device__ __forceinline__ float store_as(float v, float*) { return v; }
__device__ __forceinline__ double store_as(double v, double*) { return v; }
__device__ __forceinline__ __half store_as(float v, __half*) { return __float2half_rn(v); }
__device__ __forceinline__ __nv_bfloat16 store_as(float v, __nv_bfloat16*) {
  return __float2bfloat16_rn(v);
}

constexpr int kThreads = 256;
constexpr int kMaxWarps = kThreads / kResizeLanes;

template <typename scalar_t, typename acc_t, typename Load>
__global__ void __launch_bounds__(kThreads) resized_forward_kernel(ResizeArgs A) {
  const ResizeView<scalar_t, acc_t> V = resize_view<scalar_t, acc_t>(A);
  const int64_t HW = A.H * A.W, total = A.B * HW;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t b = i / HW, p = i - b * HW, y = p / A.W, x = p - y * A.W;
    resized_forward_pixel(V, b, y, x, Load());
  }
}

// Dynamic shared memory per warp: the tile [C1, kResizeTileStride] and the weights [4, 32].
template <typename acc_t>
size_t warp_smem(int64_t C1) {
  return sizeof(acc_t) * (size_t)(C1 * kResizeTileStride + 4 * kResizeLanes);
}

template <typename scalar_t, typename acc_t, typename Load>
__global__ void __launch_bounds__(kThreads) resized_cells_kernel(ResizeArgs A) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const ResizeView<scalar_t, acc_t> V = resize_view<scalar_t, acc_t>(A);
  const int warp = threadIdx.x / kResizeLanes, lane = threadIdx.x % kResizeLanes;
  const int warps = blockDim.x / kResizeLanes;
  acc_t* tile = reinterpret_cast<acc_t*>(smem_raw) +
                (size_t)warp * (A.C1 * kResizeTileStride + 4 * kResizeLanes);
  acc_t* wts = tile + A.C1 * kResizeTileStride;
  const int64_t cells = A.B * A.h * A.w;
  for (int64_t c = (int64_t)blockIdx.x * warps + warp; c < cells; c += (int64_t)gridDim.x * warps) {
    const int64_t b = c / (A.h * A.w), r = c - b * A.h * A.w, ci = r / A.w, cj = r - ci * A.w;
    int64_t y0, ny, x0, nx;
    resize_cell_range(V.ay, ci, &y0, &ny);
    resize_cell_range(V.ax, cj, &x0, &nx);
    if (ny * nx == 0) {
      resized_zero_lane(V, b, ci, cj, lane);
      continue;
    }
    const int64_t batches = resize_batches(ny, nx);
    for (int64_t s = 0; s < batches; ++s) {
      resized_backward_lane(V, b, y0, ny, x0, nx, s * kResizeLanes, lane, tile + lane, wts + lane,
                            Load());
      __syncwarp();
      resized_reduce_lane(V, b, ci, cj, s == 0, lane, tile, wts);
      __syncwarp();
    }
  }
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads) resized_gather_kernel(ResizeArgs A) {
  const ResizeView<scalar_t, acc_t> V = resize_view<scalar_t, acc_t>(A);
  scalar_t* grad = static_cast<scalar_t*>(A.grad);
  const int64_t hw = A.h * A.w, total = A.B * A.C1 * hw;
  for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total;
       e += (int64_t)gridDim.x * blockDim.x) {
    const int64_t bk = e / hw, r = e - bk * hw, b = bk / A.C1, k = bk - b * A.C1;
    const int64_t i = r / A.w, j = r - i * A.w;
    grad[b * A.gsB + k * A.gsC + i * A.gsH + j * A.gsW] =
        store_as(resized_gather(V, b, k, i, j), grad);
  }
}

// The block of ocr_resize_thread.h's functions: this thread, the block size, its barriers
// (plain, OR-ing, counting).
struct CudaBlock {
  int tid, n;
  __host__ __device__ void sync() const {
#ifdef __CUDA_ARCH__
    __syncthreads();
#endif
  }
  __host__ __device__ bool any(bool p) const {
#ifdef __CUDA_ARCH__
    return __syncthreads_or(p);
#else
    return p;
#endif
  }
  __host__ __device__ int count(bool p) const {
#ifdef __CUDA_ARCH__
    return __syncthreads_count(p);
#else
    return p ? 1 : 0;
#endif
  }
};

// This block's contiguous share [first, last) of `items`.
__device__ void block_items(int64_t items, int64_t* first, int64_t* last) {
  const int64_t per = (items + gridDim.x - 1) / gridDim.x;
  *first = blockIdx.x * per;
  *last = *first + per < items ? *first + per : items;
}

template <typename scalar_t, typename acc_t, typename Load, int GROUP, bool CE>
__global__ void __launch_bounds__(kResizeMaxThreads)
    resized_fast_forward_kernel(ResizeArgs A, ResizePlan P) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  int64_t first, last;
  block_items(A.B * A.H, &first, &last);  // output rows
  resized_forward_block<scalar_t, acc_t, GROUP, CE>(CudaBlock{(int)threadIdx.x, (int)blockDim.x},
                                                    resize_view<scalar_t, acc_t>(A), P, first,
                                                    last, smem_raw, Load());
}

template <typename scalar_t, typename acc_t, typename Load, int GROUP, bool CE>
__global__ void __launch_bounds__(kResizeMaxThreads)
    resized_fast_backward_kernel(ResizeArgs A, ResizePlan P) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  int64_t first, last;
  block_items(A.B * A.h, &first, &last);  // cell rows
  resized_backward_block<scalar_t, acc_t, GROUP, CE>(CudaBlock{(int)threadIdx.x, (int)blockDim.x},
                                                     resize_view<scalar_t, acc_t>(A), P, first,
                                                     last, smem_raw, Load());
}

// Grid rows: (image, group of kGatherClasses classes); a thread one low-resolution pixel over
// the group's classes (32-bit offsets within a plane: h·w < 2^31).
constexpr int kGatherClasses = 8;

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads) resized_fast_gather_kernel(ResizeArgs A) {
  scalar_t* grad = static_cast<scalar_t*>(A.grad);
  const acc_t* corners = static_cast<const acc_t*>(A.corners);
  const int hw = (int)(A.h * A.w), w = (int)A.w;
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= hw) return;
  const int i = r / w, j = r - i * w;
  bool from_prev, own;
  resize_gather_rows(resize_axis<acc_t>(A.h, A.H, A.align_corners), i, &from_prev, &own);
  const int64_t plane = A.B * A.C1 * hw, groups = (A.C1 + kGatherClasses - 1) / kGatherClasses;
  const int64_t rows = A.B * groups;  // (a named bound: bench/static.py gives it its trip count)
  for (int64_t bg = blockIdx.y; bg < rows; bg += gridDim.y) {
    const int64_t b = bg / groups, k0 = (bg - b * groups) * kGatherClasses;
    const int classes = (int)(A.C1 - k0 < kGatherClasses ? A.C1 - k0 : kGatherClasses);
    const acc_t* e = corners + (b * A.C1 + k0) * hw + r;
    scalar_t* g = grad + b * A.gsB + k0 * A.gsC + i * A.gsH + j * A.gsW;
#pragma unroll 1
    for (int k = 0; k < classes; ++k, e += hw, g += A.gsC)
      *g = store_as(resized_fast_gather(e, plane, w, from_prev, own), grad);
  }
}

int blocks_for(int64_t items, int64_t per_block) {
  int64_t blocks = (items + per_block - 1) / per_block;
  return (int)(blocks < (1 << 20) ? (blocks > 0 ? blocks : 1) : (1 << 20));
}

// A fast-path kernel over `items` rows / cells: one wave of resident blocks (at most one an
// item), each taking a contiguous range of items.
template <typename K>
cudaError_t launch_fast(K kernel, const ResizeArgs& A, const ResizePlan& P, size_t smem,
                        int64_t items, cudaStream_t stream) {
  int dev = 0, sms = 0, per_sm = 0;
  cudaError_t err = cudaGetDevice(&dev);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  if (err != cudaSuccess) return err;
  if (smem > 48 * 1024 &&
      (err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem)) !=
          cudaSuccess)
    return err;
  if ((err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, P.threads, smem)) !=
      cudaSuccess)
    return err;
  const int64_t wave = (int64_t)(per_sm > 0 ? per_sm : 1) * (sms > 0 ? sms : 1);
  const int64_t grid = items < wave ? items : wave;
  kernel<<<(unsigned)grid, P.threads, smem, stream>>>(A, P);
  return cudaGetLastError();
}

template <typename scalar_t, typename acc_t, typename Load, int GROUP, bool CE>
cudaError_t launch_fast_pass(const ResizeArgs& A, const ResizePlan& P, bool backward,
                             cudaStream_t stream) {
  if (!backward)
    return launch_fast(resized_fast_forward_kernel<scalar_t, acc_t, Load, GROUP, CE>, A, P,
                       P.smem_fwd, A.B * A.H, stream);
  cudaError_t err = launch_fast(resized_fast_backward_kernel<scalar_t, acc_t, Load, GROUP, CE>, A,
                                P, P.smem_bwd, A.B * A.h, stream);
  if (err != cudaSuccess) return err;
  const int64_t rows = A.B * ((A.C1 + kGatherClasses - 1) / kGatherClasses);
  const int64_t gy = rows < 65535 ? rows : 65535;
  const dim3 grid((unsigned)((A.h * A.w + kThreads - 1) / kThreads), (unsigned)gy);
  resized_fast_gather_kernel<scalar_t, acc_t><<<grid, kThreads, 0, stream>>>(A);
  return cudaGetLastError();
}

template <typename scalar_t, typename acc_t, typename Load, bool CE>
cudaError_t launch_fast_group(const ResizeArgs& A, const ResizePlan& P, bool backward,
                              cudaStream_t stream) {
  switch (A.group) {
    case GROUP_ADA: return launch_fast_pass<scalar_t, acc_t, Load, GROUP_ADA, CE>(A, P, backward, stream);
    case GROUP_MAX: return launch_fast_pass<scalar_t, acc_t, Load, GROUP_MAX, CE>(A, P, backward, stream);
    case GROUP_ALL: return launch_fast_pass<scalar_t, acc_t, Load, GROUP_ALL, CE>(A, P, backward, stream);
    default: return cudaErrorInvalidValue;
  }
}

template <typename acc_t>
bool fast_path(const ResizeArgs& A, ResizePlan* P) {
  *P = resize_plan<acc_t>(A.C1, A.h, A.w, A.W, A.align_corners);
  int dev = 0, optin = 0;
  if (!P->fast || cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess)
    return false;
  return P->smem_bwd <= (size_t)optin;
}

template <typename scalar_t, typename acc_t, typename Load>
cudaError_t launch_typed(const ResizeArgs& A, bool backward, cudaStream_t stream) {
  if (A.B * A.H * A.W == 0 || A.C1 == 0) return cudaSuccess;
  ResizePlan P;
  if (fast_path<acc_t>(A, &P))
    return A.target != nullptr ? launch_fast_group<scalar_t, acc_t, Load, true>(A, P, backward, stream)
                               : launch_fast_group<scalar_t, acc_t, Load, false>(A, P, backward, stream);
  if (!backward) {
    const int64_t total = A.B * A.H * A.W;
    if (total == 0) return cudaSuccess;
    resized_forward_kernel<scalar_t, acc_t, Load>
        <<<blocks_for(total, kThreads), kThreads, 0, stream>>>(A);
    return cudaGetLastError();
  }
  const int64_t cells = A.B * A.h * A.w;
  if (cells == 0 || A.C1 == 0) return cudaSuccess;
  // As many warps per block as fit in the default 48 KiB; beyond one warp's worth, opt in to the
  // device's larger shared memory for a single warp.
  const size_t per_warp = warp_smem<acc_t>(A.C1);
  int warps = (int)((48 * 1024) / per_warp);
  warps = warps < 1 ? 1 : (warps > kMaxWarps ? kMaxWarps : warps);
  const size_t smem = per_warp * warps;
  auto cells_kernel = resized_cells_kernel<scalar_t, acc_t, Load>;
  if (smem > 48 * 1024) {
    int dev = 0, optin = 0;
    cudaError_t err = cudaGetDevice(&dev);
    if (err == cudaSuccess)
      err = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
    if (err != cudaSuccess) return err;
    if ((size_t)optin < smem) return cudaErrorInvalidValue;
    err = cudaFuncSetAttribute(cells_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (err != cudaSuccess) return err;
  }
  cells_kernel<<<blocks_for(cells, warps), warps * kResizeLanes, smem, stream>>>(A);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  const int64_t total = A.B * A.C1 * A.h * A.w;
  resized_gather_kernel<scalar_t, acc_t><<<blocks_for(total, kThreads), kThreads, 0, stream>>>(A);
  return cudaGetLastError();
}

bool fast_path_any(const ResizeArgs& A) {
  ResizePlan P;
  return A.dtype == ocr_kernels::DTYPE_F64 ? fast_path<double>(A, &P) : fast_path<float>(A, &P);
}

cudaError_t launch(const ResizeArgs& A, bool backward, cudaStream_t stream) {
  switch (A.dtype) {
    case ocr_kernels::DTYPE_F32: return launch_typed<float, float, LoadF32>(A, backward, stream);
    case ocr_kernels::DTYPE_F64: return launch_typed<double, double, LoadF64>(A, backward, stream);
    case ocr_kernels::DTYPE_F16: return launch_typed<__half, float, LoadF16>(A, backward, stream);
    case ocr_kernels::DTYPE_BF16:
      return launch_typed<__nv_bfloat16, float, LoadBF16>(A, backward, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace

cudaError_t launch_resized_forward(const ResizeArgs& args, cudaStream_t stream) {
  return launch(args, false, stream);
}

int resized_corner_planes(const ResizeArgs& args) { return fast_path_any(args) ? 2 : 4; }

cudaError_t launch_resized_backward(const ResizeArgs& args, cudaStream_t stream) {
  return launch(args, true, stream);
}

}  // namespace ocr
