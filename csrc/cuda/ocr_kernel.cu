// CUDA kernels of the OCR ops. A block is kBlockThreads threads over consecutive pixels of ONE
// image (coalesced along the spatial dim for NCHW); each thread runs ocr_thread.h's
// thread_forward / thread_backward on its pixels (the code the CPU op _pixelwise_seg_ocr runs in
// CI). The block writes the image's class list (IC first, then OC) into shared memory, so the class
// loops visit each part without a branch on the tags. Two paths:
// - fast: unit pixel stride (NCHW-contiguous logits and gradient) and per-image offsets below
//   2^31: kThreadPixels pixels a thread, 32 apart, so one row address serves them all (immediate
//   offsets) and offsets are 32-bit;
// - any other layout: one pixel a thread, 64-bit per-dim strides, no copy.
// The grid is one wave of resident blocks (no partial last wave): a column of blocks per image,
// each looping over the image's tiles. fp32 math (fp64 for fp64), the caller's stream, no synchronisation.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "../ocr_thread.h"
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

constexpr unsigned kFull = 0xffffffffu;

// What the host works out once per launch: the tiling, and the options in the math dtype (a
// conversion from double in the kernel would be redone inside the loops that use it).
template <typename acc_t>
struct Launch {
  int per_image;  // tiles of one image
  int64_t last;   // first pixel of an image's last tile (fast path: N − tile, the tiles overlap)
  acc_t margin, threshold;
};

// smem[0] = nic, smem[1 ..] = the class list of image row icb: every warp ballots the tags (so
// that the ballots stay in converged code), warp 0 writes each class into its slot.
__device__ void build_class_list(const uint8_t* icb, int C1, int* smem) {
  const int lane = threadIdx.x & 31;
  const bool writer = threadIdx.x < 32;
  const unsigned below = (1u << lane) - 1u;
  const int words = (C1 + 31) / 32;
  int nic = 0;
  for (int w = 0; w < words; ++w) {
    const int k = w * 32 + lane;
    nic += __popc(__ballot_sync(kFull, k < C1 && icb[k]));
  }
  int ni = 0, no = nic;
  for (int w = 0; w < words; ++w) {
    const int k = w * 32 + lane;
    const bool in = k < C1, f = in && icb[k];
    const unsigned bi = __ballot_sync(kFull, f), bo = __ballot_sync(kFull, in && !f);
    if (writer && in) smem[1 + (f ? ni + __popc(bi & below) : no + __popc(bo & below))] = k;
    ni += __popc(bi);
    no += __popc(bo);
  }
  if (threadIdx.x == 0) smem[0] = nic;
}

// A warp owns PPT·32 consecutive pixels of a tile, pixel i of a thread is 32·i past its first:
// every load is 32 consecutive pixels, and a warp's pixels are as close together as they can be
// (a warp whose pixels have no gradient skips the backward's reads). On the fast path an image's
// last tile ends at its last pixel (it overlaps the one before and writes the same values), so
// every pixel of every tile is in range and no load or store needs a mask.
template <int PPT, typename acc_t>
__device__ int64_t first_pixel(int chunk, const Launch<acc_t>& L) {
  int64_t start = (int64_t)chunk * (kBlockThreads * PPT);
  if (PPT > 1 && start > L.last) start = L.last;
  return start + (threadIdx.x >> 5) * (32 * PPT) + (threadIdx.x & 31);
}

// Row k of a thread's pixels on the fast path, from their pointer and the row stride in BYTES:
// k·stride is below 2^31 (fits_fast), so one 32x32 -> 64-bit multiply-add (IMAD.WIDE.U32) forms
// the address. An element stride would need the product scaled by the element size after the
// widening (a 64-bit add and a LEA pair per class row, the address arithmetic that dominated
// the bf16 class loops). The product is PTX: from C++ nvcc hoists the widened stride out of the
// class loop and multiplies in 64 bits, which costs a high-word add on top. The add to the
// pointer stays C++, so that the loads keep their global address space.
__device__ __forceinline__ uint64_t mul_wide(unsigned a, unsigned b) {
  uint64_t r;
  asm("mul.wide.u32 %0, %1, %2;" : "=l"(r) : "r"(a), "r"(b));
  return r;
}
__device__ __forceinline__ const char* fast_row_bytes(const char* base, int k, unsigned stride) {
  return base + mul_wide((unsigned)k, stride);
}
__device__ __forceinline__ char* fast_row_bytes(char* base, int k, unsigned stride) {
  return base + mul_wide((unsigned)k, stride);
}
template <typename T>
__device__ __forceinline__ const T* fast_row(const T* base, int k, unsigned stride) {
  return reinterpret_cast<const T*>(fast_row_bytes(reinterpret_cast<const char*>(base), k, stride));
}
template <typename T>
__device__ __forceinline__ T* fast_row(T* base, int k, unsigned stride) {
  return reinterpret_cast<T*>(fast_row_bytes(reinterpret_cast<char*>(base), k, stride));
}

template <typename acc_t>
__device__ ThreadArgs<acc_t> thread_args(const CudaArgs& A, const Launch<acc_t>& L, const int* smem) {
  const int C1 = (int)A.zl.C1;
  return ThreadArgs<acc_t>{smem + 1, smem[0], C1 - smem[0], C1,
                           static_cast<const acc_t*>(A.prior), L.margin, L.threshold, A.pixels};
}

// f(b, T, p) for every tile of the block: image b, its class list T, the thread's first pixel p;
// then after(b) (block-uniform) once the block is done with image b.
template <int PPT, typename acc_t, typename F, typename G>
__device__ void for_each_tile(const CudaArgs& A, const Launch<acc_t>& L, int* smem, const F& f,
                              const G& after) {
  const int C1 = (int)A.zl.C1;
  for (int64_t b = blockIdx.y; b < A.zl.B; b += gridDim.y) {
    __syncthreads();
    build_class_list(A.ic + b * C1, C1, smem);
    __syncthreads();
    const ThreadArgs<acc_t> T = thread_args<acc_t>(A, L, smem);
    for (int chunk = blockIdx.x, per_image = L.per_image; chunk < per_image; chunk += gridDim.x)
      f(b, T, first_pixel<PPT>(chunk, L));
    after(b);
  }
}

// The forward's loss mask (ocr_thread.h mask_words) of a warp's pixels, a ballot each 32 of
// them. In an aligned tile ballot i is word w0 / 32 + i, which lane i stores (an image's last
// tile that overlaps the one before at an aligned start stores that tile's words again, the same
// values). The unit-stride path's last tile of an image starts at N − tile, o = N % 32 into a
// word (the same for the block's warps: the branch is block-uniform): its ballots wait in shared
// memory for store_mask_shifted. Returns whether they do.
template <int PPT, bool FAST, typename acc_t>
__device__ __forceinline__ bool store_mask(const CudaArgs& A, uint32_t* ballots, int64_t b,
                                           int64_t p, const bool* valid, const acc_t* loss) {
  const int lane = threadIdx.x & 31;
  unsigned mine = 0;  // ballot `lane` (lanes below PPT): one store a lane, no branch per ballot
#pragma unroll
  for (int i = 0; i < PPT; ++i) {
    const unsigned m = __ballot_sync(kFull, valid[i] && loss[i] != (acc_t)0);
    mine = lane == i ? m : mine;
  }
  // the unit-stride path's pixel offsets are below 2^31 (fits_fast): 32-bit arithmetic there
  const int64_t w0 = FAST ? (int64_t)((unsigned)p - (unsigned)lane) : p - lane;
  const bool shifted = FAST && (w0 & 31) != 0;
  const int64_t word = FAST ? (int64_t)(((unsigned)w0 >> 5) + (unsigned)lane) : (w0 >> 5) + lane;
  if (lane < PPT) {
    if (shifted)
      ballots[(threadIdx.x >> 5) * PPT + lane] = mine;
    else if (FAST || word * 32 < A.zl.N)  // the other path's tiles are aligned
      A.mask_out[b * mask_words(A.zl.N) + word] = mine;
  }
  return shifted;
}

// The words of the shifted last tile of image b, after a barrier (not inside the tile, whose
// ballots would then have to assume a diverged warp): thread t stores aligned word t of the
// tile (ocr_thread.h mask_word_shifted) where it lies past the previous tile's words, so that
// every word has one writer and none needs clearing first. The next image's ballots are
// written after its own two barriers.
template <int PPT, typename acc_t>
__device__ __forceinline__ void store_mask_shifted(const CudaArgs& A, const Launch<acc_t>& L,
                                                   const uint32_t* ballots, int64_t b) {
  constexpr int n = kBlockThreads * PPT / 32;
  const int t = threadIdx.x;
  const int64_t word = (L.last >> 5) + 1 + t;
  const int64_t first_new = ((int64_t)(L.per_image - 1) * (kBlockThreads * PPT)) >> 5;
  if (t < n && word >= first_new)
    A.mask_out[b * mask_words(A.zl.N) + word] = mask_word_shifted(ballots, n, t, (int)(L.last & 31));
}

// The maps of a thread's pixels: contiguous [B, N] in the math dtype (ce_out with CE).
template <int PPT, bool CE, typename acc_t>
__device__ __forceinline__ void store_maps(const CudaArgs& A, int64_t b, int64_t p,
                                           const bool* valid, const acc_t* loss, const acc_t* ce) {
  acc_t* ocr_out = static_cast<acc_t*>(A.ocr_out);
  acc_t* ce_out = static_cast<acc_t*>(A.ce_out);
  const int64_t o = b * A.zl.N + p;
#pragma unroll
  for (int i = 0; i < PPT; ++i) {
    if (!valid[i]) continue;
    ocr_out[o + i * 32] = loss[i];
    if (CE) ce_out[o + i * 32] = ce[i];
  }
}

template <typename scalar_t, typename acc_t, int GROUP, bool CE, bool FAST>
__global__ void __launch_bounds__(kBlockThreads) forward_kernel(CudaArgs A, Launch<acc_t> L) {
  extern __shared__ int smem[];
  constexpr int PPT = FAST ? kThreadPixels : 1;
  const scalar_t* z = static_cast<const scalar_t*>(A.z);
  const int64_t N = A.zl.N;
  uint32_t* ballots = reinterpret_cast<uint32_t*>(smem + A.zl.C1 + 1);
  bool shifted = false;  // block-uniform: the block ran an image's shifted last tile
  auto tile = [&](int64_t b, const ThreadArgs<acc_t>& T, int64_t p) {
    bool valid[PPT];
    int64_t t[PPT];
#pragma unroll
    for (int i = 0; i < PPT; ++i) {
      valid[i] = FAST || p < N;
      t[i] = CE && valid[i] ? A.target[b * A.tl.sB + (p + i * 32) * A.tl.sN] : 0;
    }
    const scalar_t* zp = z + b * A.zl.sB + (FAST ? p : p * A.zl.sN);
    const unsigned sCb = (unsigned)A.zl.sC * (unsigned)sizeof(scalar_t);
    auto zf = [&](int k, int i) -> acc_t {
      const scalar_t* row = FAST ? fast_row(zp, k, sCb) : zp + k * A.zl.sC;
      return valid[i] ? static_cast<acc_t>(to_acc(row[i * 32])) : (acc_t)0;
    };
    acc_t loss[PPT], ce[PPT];
    thread_forward<acc_t, GROUP, CE, PPT>(zf, T, t, A.ignore_index, loss, ce);
    if (!CE) shifted |= store_mask<PPT, FAST>(A, ballots, b, p, valid, loss);
    store_maps<PPT, CE>(A, b, p, valid, loss, ce);
  };
  for_each_tile<PPT>(A, L, smem, tile, [&](int64_t b) {
    if (CE || !FAST || (L.last & 31) == 0) return;
    __syncthreads();
    if (shifted) store_mask_shifted<PPT>(A, L, ballots, b);
    shifted = false;
  });
}

// The backward of a warp's 32·PPT pixels (ocr_thread.h's compaction): a warp with few pixels
// with a gradient writes zeros, without a read of the logits, for the others, then works on the
// k pixels with one, compacted into slots, ceil(k / 32) rounds of one pixel a lane; a fuller warp
// runs thread_backward on its PPT pixels a lane (a pixel without a gradient gets 0·e = 0 there,
// its logits unread). slots: the warp's 32·PPT bytes of shared memory, pixel offsets from the
// warp's first pixel.
template <typename scalar_t, typename acc_t, int GROUP, bool CE, bool FAST>
__global__ void __launch_bounds__(kBlockThreads) backward_kernel(CudaArgs A, Launch<acc_t> L) {
  extern __shared__ int smem[];
  constexpr int PPT = FAST ? kThreadPixels : 1;
  const scalar_t* z = static_cast<const scalar_t*>(A.z);
  scalar_t* grad = static_cast<scalar_t*>(A.grad);
  const acc_t* loss = static_cast<const acc_t*>(A.loss);
  const acc_t* g_ocr = static_cast<const acc_t*>(A.g_ocr);
  const acc_t* g_ce = static_cast<const acc_t*>(A.g_ce);
  const int64_t N = A.zl.N;
  const int lane = threadIdx.x & 31;
  const unsigned sCb = (unsigned)A.zl.sC * (unsigned)sizeof(scalar_t);  // bytes (fast_row)
  const unsigned gCb = (unsigned)A.gl.sC * (unsigned)sizeof(scalar_t);
  for_each_tile<PPT>(A, L, smem, [&](int64_t b, const ThreadArgs<acc_t>& T, int64_t p) {
    // OCR alone: the loss map is read where the forward's mask has a bit (bit i of the thread
    // is mask_bit(row, p + 32·i): word p / 32 + i, shifted by p % 32); a clear bit means a loss
    // of 0, hence no gradient. A compacted pixel has its bit.
    bool on[PPT];
    if (!CE) {
      const uint32_t* mw = A.mask + b * mask_words(N) + (p >> 5);
      const unsigned sh = (unsigned)(p & 31);
#pragma unroll
      for (int i = 0; i < PPT; ++i) on[i] = (FAST || p + 32 * i < N) && ((mw[i] >> sh) & 1u);
    }
    auto read_on = [&](int64_t q, bool bit) {
      return pixel_grad<acc_t, CE>(
          [&] { return CE || bit ? loss[b * A.ll.sB + q * A.ll.sN] : (acc_t)0; },
          [&] { return g_ocr[b * A.gol.sB + q * A.gol.sN]; },
          [&] { return A.target[b * A.tl.sB + q * A.tl.sN]; },
          [&] { return g_ce[b * A.gcl.sB + q * A.gcl.sN]; }, A.ignore_index);
    };
    auto read = [&](int64_t q) { return read_on(q, true); };
    // element offsets from the image's first logit: 32-bit on the fast path (fits_fast)
    const scalar_t* zb = z + b * A.zl.sB;
    scalar_t* gb = grad + b * A.gl.sB;
    auto z_at = [&](int64_t q, int c) -> acc_t {
      return static_cast<acc_t>(to_acc(FAST ? *fast_row(zb + (unsigned)q, c, sCb) : zb[q * A.zl.sN + c * A.zl.sC]));
    };
    auto store_at = [&](int64_t q, int c, acc_t d) {
      *(FAST ? fast_row(gb + (unsigned)q, c, gCb) : gb + (q * A.gl.sN + c * A.gl.sC)) = from_acc<scalar_t>(d);
    };
    bool valid[PPT], active[PPT];
    PixelGrad<acc_t> P[PPT];
    unsigned m[PPT];
#pragma unroll
    for (int i = 0; i < PPT; ++i) {
      const int64_t q = p + i * 32;
      valid[i] = FAST || q < N;
      P[i] = valid[i] ? read_on(q, CE || on[i]) : PixelGrad<acc_t>{};
      active[i] = P[i].active;
      m[i] = __ballot_sync(kFull, active[i]);
    }
    const int k = warp_active<PPT>(m);
    scalar_t* gp = FAST ? gb + p : gb + p * A.gl.sN;
    auto store = [&](int c, int i, acc_t d) {
      scalar_t* row = FAST ? fast_row(gp, c, gCb) : gp + c * A.gl.sC;
      if (valid[i]) row[i * 32] = from_acc<scalar_t>(d);
    };
    if (!warp_compacts(k)) {
      const scalar_t* zp = FAST ? zb + p : zb + p * A.zl.sN;
      auto zf = [&](int c, int i) -> acc_t {
        const scalar_t* row = FAST ? fast_row(zp, c, sCb) : zp + c * A.zl.sC;
        return active[i] ? static_cast<acc_t>(to_acc(row[i * 32])) : (acc_t)0;
      };
      acc_t l[PPT], a[PPT], gce[PPT];
      int64_t t[PPT];
#pragma unroll
      for (int i = 0; i < PPT; ++i) {
        l[i] = active[i] ? P[i].loss : (acc_t)0;
        a[i] = active[i] ? P[i].a : (acc_t)0;
        gce[i] = active[i] ? P[i].gce : (acc_t)0;
        t[i] = P[i].t;
      }
      thread_backward<acc_t, GROUP, CE, PPT>(zf, store, T, l, a, gce, t);
      return;
    }
    uint8_t* slots = reinterpret_cast<uint8_t*>(smem + T.C1 + 1) + (threadIdx.x >> 5) * (32 * PPT);
#pragma unroll
    for (int i = 0; i < PPT; ++i)
      if (active[i]) slots[warp_slot<PPT>(m, i, lane)] = (uint8_t)(i * 32 + lane);
    __syncwarp();
    thread_backward_zeros<acc_t, PPT>(store, active, T.C1);
    const int64_t w0 = p - lane;
    for (int r = 0, rounds = (k + 31) >> 5; r < rounds; ++r)
      compacted_round<acc_t, GROUP, CE>(T, slots, k, r, lane, w0, read, z_at, store_at);
    __syncwarp();  // the slots are the next tile's
  }, [](int64_t) {});
}

// The seg objective (ocr_thread.h thread_objective): per pixel the maps and the gradient of
// coef[0]·ce_weight·ce + coef[1]·ocr from one read of the logits, in forward_kernel's layout
// (its tiles and paths), the gradient through its own strides as backward_kernel stores it. A
// warp skips the OC loop's target compare where none of its pixels has a non-ignored OC target
// (the usual case).
template <typename scalar_t, typename acc_t, int GROUP, bool FAST>
__global__ void __launch_bounds__(kBlockThreads) objective_kernel(CudaArgs A, Launch<acc_t> L) {
  extern __shared__ int smem[];
  constexpr int PPT = FAST ? kThreadPixels : 1;
  // the factors, read once: coef[0] for the CE (times the pixel's weight), coef[1] for the OCR
  const acc_t coef_ce = static_cast<const acc_t*>(A.coef)[0];
  const acc_t coef_ocr = static_cast<const acc_t*>(A.coef)[1];
  const acc_t* w = static_cast<const acc_t*>(A.ce_weight);  // null: 1
  const scalar_t* z = static_cast<const scalar_t*>(A.z);
  scalar_t* grad = static_cast<scalar_t*>(A.grad);
  const int64_t N = A.zl.N;
  const int C1 = (int)A.zl.C1;
  const unsigned sCb = (unsigned)A.zl.sC * (unsigned)sizeof(scalar_t);  // bytes (fast_row)
  const unsigned gCb = (unsigned)A.gl.sC * (unsigned)sizeof(scalar_t);
  for_each_tile<PPT>(A, L, smem, [&](int64_t b, const ThreadArgs<acc_t>& T, int64_t p) {
    bool valid[PPT], oc_target = false;
    int64_t t[PPT];
    acc_t a[PPT], gce[PPT];
#pragma unroll
    for (int i = 0; i < PPT; ++i) {
      const int64_t q = p + i * 32;
      valid[i] = FAST || q < N;
      t[i] = valid[i] ? A.target[b * A.tl.sB + q * A.tl.sN] : A.ignore_index;
      oc_target |= objective_pixel(t[i], A.ignore_index, coef_ce,
                                   w != nullptr ? w + (b * A.wl.sB + q * A.wl.sN) : nullptr,
                                   A.ic + b * C1, C1, &gce[i]);
      a[i] = coef_ocr;
    }
    const bool oc_targets = __any_sync(kFull, oc_target);
    const scalar_t* zp = z + b * A.zl.sB + (FAST ? p : p * A.zl.sN);
    scalar_t* gp = grad + b * A.gl.sB + (FAST ? p : p * A.gl.sN);
    auto zf = [&](int k, int i) -> acc_t {
      const scalar_t* row = FAST ? fast_row(zp, k, sCb) : zp + k * A.zl.sC;
      return valid[i] ? static_cast<acc_t>(to_acc(row[i * 32])) : (acc_t)0;
    };
    auto store = [&](int k, int i, acc_t d) {
      scalar_t* row = FAST ? fast_row(gp, k, gCb) : gp + k * A.gl.sC;
      if (valid[i]) row[i * 32] = from_acc<scalar_t>(d);
    };
    acc_t loss[PPT], ce[PPT];
    thread_objective<acc_t, GROUP, PPT, decltype(zf), decltype(store), true>(
        zf, store, T, t, A.ignore_index, a, gce, loss, ce, oc_targets);
    store_maps<PPT, true>(A, b, p, valid, loss, ce);
  }, [](int64_t) {});
}

// scale_grad_: every block reads g first and returns when it is 1 (the usual upstream gradient
// of a loss); else a grid-stride loop over the n elements.
template <typename scalar_t, typename acc_t>
__global__ void scale_grad_kernel(scalar_t* grad, const acc_t* g, int64_t n) {
  const acc_t s = *g;
  if (s == (acc_t)1) return;
  const int64_t step = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step)
    grad[i] = from_acc<scalar_t>(static_cast<acc_t>(to_acc(grad[i])) * s);
}

// The kernel's pass, for its shared memory past the class list.
enum class Pass { kForward, kBackward, kObjective };

template <typename acc_t, typename K>
cudaError_t launch_kernel(K kernel, const CudaArgs& A, int ppt, Pass pass, cudaStream_t stream) {
  const int64_t N = A.zl.N, B = A.zl.B, tile = kBlockThreads * ppt;
  if (N == 0 || B == 0) return cudaSuccess;
  const int64_t per_image = (N + tile - 1) / tile;
  if (per_image >= (int64_t(1) << 31)) return cudaErrorInvalidValue;
  const Launch<acc_t> L{(int)per_image, N - tile, (acc_t)A.margin, (acc_t)A.threshold};
  // the class list, and the backward's slots (a byte a pixel) or the forward's mask ballots (a
  // word per 32 pixels)
  const size_t smem = sizeof(int) * (size_t)(A.zl.C1 + 1) +
                      (pass == Pass::kBackward ? kBlockThreads * ppt
                       : pass == Pass::kForward ? sizeof(uint32_t) * kBlockThreads * ppt / 32 : 0);
  cudaError_t err;
  if (smem > 48 * 1024) {
    err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (err != cudaSuccess) return err;
  }
  int dev = 0, sms = 0, per_sm = 0;
  if ((err = cudaGetDevice(&dev)) != cudaSuccess) return err;
  if ((err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev)) != cudaSuccess) return err;
  if ((err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kBlockThreads, smem)) != cudaSuccess)
    return err;
  // one wave of resident blocks, split over the images (blocks of a column share its class list)
  const int64_t wave = (int64_t)(per_sm > 0 ? per_sm : 1) * (sms > 0 ? sms : 1);
  const int64_t gy = B < 65535 ? B : 65535;
  int64_t gx = wave / gy;
  gx = gx < 1 ? 1 : (gx < per_image ? gx : per_image);
  kernel<<<dim3((unsigned)gx, (unsigned)gy), kBlockThreads, smem, stream>>>(A, L);
  return cudaGetLastError();
}

// The fast path needs a unit pixel stride and every per-image byte offset it forms below 2^31.
// (and an image of at least one tile).
bool fits_fast(const Layout3& l, int64_t elem) {
  const int64_t span = ((l.C1 - 1) * l.sC + l.N) * elem;
  return l.sN == 1 && l.sC >= 0 && l.N >= kBlockThreads * kThreadPixels && span < (int64_t(1) << 31);
}

template <typename scalar_t, typename acc_t, int GROUP, bool CE>
cudaError_t launch_variant(const CudaArgs& A, Pass pass, cudaStream_t stream) {
  const bool fast = fits_fast(A.zl, sizeof(scalar_t)) &&
                    (pass == Pass::kForward || fits_fast(A.gl, sizeof(scalar_t)));
  if (pass == Pass::kObjective) {
    // the objective has a target: its kernels are instantiated with CE only
    if constexpr (CE) {
      if (fast) return launch_kernel<acc_t>(objective_kernel<scalar_t, acc_t, GROUP, true>, A, kThreadPixels, pass, stream);
      return launch_kernel<acc_t>(objective_kernel<scalar_t, acc_t, GROUP, false>, A, 1, pass, stream);
    } else {
      return cudaErrorInvalidValue;
    }
  }
  if (pass == Pass::kBackward) {
    if (fast) return launch_kernel<acc_t>(backward_kernel<scalar_t, acc_t, GROUP, CE, true>, A, kThreadPixels, pass, stream);
    return launch_kernel<acc_t>(backward_kernel<scalar_t, acc_t, GROUP, CE, false>, A, 1, pass, stream);
  }
  if (fast) return launch_kernel<acc_t>(forward_kernel<scalar_t, acc_t, GROUP, CE, true>, A, kThreadPixels, pass, stream);
  return launch_kernel<acc_t>(forward_kernel<scalar_t, acc_t, GROUP, CE, false>, A, 1, pass, stream);
}

template <typename scalar_t, typename acc_t, bool CE>
cudaError_t launch_group(const CudaArgs& A, Pass pass, cudaStream_t stream) {
  switch (A.group) {
    case GROUP_ADA: return launch_variant<scalar_t, acc_t, GROUP_ADA, CE>(A, pass, stream);
    case GROUP_MAX: return launch_variant<scalar_t, acc_t, GROUP_MAX, CE>(A, pass, stream);
    case GROUP_ALL: return launch_variant<scalar_t, acc_t, GROUP_ALL, CE>(A, pass, stream);
    default: return cudaErrorInvalidValue;
  }
}

template <typename scalar_t, typename acc_t>
cudaError_t launch_typed(const CudaArgs& A, Pass pass, cudaStream_t stream) {
  if (A.target != nullptr) return launch_group<scalar_t, acc_t, true>(A, pass, stream);
  return launch_group<scalar_t, acc_t, false>(A, pass, stream);
}

cudaError_t launch(const CudaArgs& A, Pass pass, cudaStream_t stream) {
  switch (A.dtype) {
    case ocr_kernels::DTYPE_F32: return launch_typed<float, float>(A, pass, stream);
    case ocr_kernels::DTYPE_F64: return launch_typed<double, double>(A, pass, stream);
    case ocr_kernels::DTYPE_F16: return launch_typed<__half, float>(A, pass, stream);
    case ocr_kernels::DTYPE_BF16: return launch_typed<__nv_bfloat16, float>(A, pass, stream);
    default: return cudaErrorInvalidValue;
  }
}

template <typename scalar_t, typename acc_t>
cudaError_t launch_scale(void* grad, const void* g, int64_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  constexpr int threads = 256;
  const auto kernel = scale_grad_kernel<scalar_t, acc_t>;
  cudaError_t err;
  int dev = 0, sms = 0, per_sm = 0;
  if ((err = cudaGetDevice(&dev)) != cudaSuccess) return err;
  if ((err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev)) != cudaSuccess) return err;
  if ((err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, 0)) != cudaSuccess)
    return err;
  // at most one wave of resident blocks, and no block without an element
  const int64_t wave = (int64_t)(per_sm > 0 ? per_sm : 1) * (sms > 0 ? sms : 1);
  const int64_t need = (n + threads - 1) / threads;
  const unsigned blocks = (unsigned)(need < wave ? need : wave);
  kernel<<<blocks, threads, 0, stream>>>(static_cast<scalar_t*>(grad), static_cast<const acc_t*>(g), n);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_ocr_forward(const CudaArgs& args, cudaStream_t stream) {
  return launch(args, Pass::kForward, stream);
}

cudaError_t launch_ocr_backward(const CudaArgs& args, cudaStream_t stream) {
  return launch(args, Pass::kBackward, stream);
}

cudaError_t launch_ocr_objective(const CudaArgs& args, cudaStream_t stream) {
  return launch(args, Pass::kObjective, stream);
}

cudaError_t launch_scale_grad(int dtype, void* grad, const void* g, int64_t n, cudaStream_t stream) {
  switch (dtype) {
    case ocr_kernels::DTYPE_F32: return launch_scale<float, float>(grad, g, n, stream);
    case ocr_kernels::DTYPE_F64: return launch_scale<double, double>(grad, g, n, stream);
    case ocr_kernels::DTYPE_F16: return launch_scale<__half, float>(grad, g, n, stream);
    case ocr_kernels::DTYPE_BF16: return launch_scale<__nv_bfloat16, float>(grad, g, n, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace ocr
