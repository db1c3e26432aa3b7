// CPU kernels of the OCR ops (and of the fused segmentation maps).
//
// Work unit: a tile of up to P consecutive pixels of one image. The class loop is outside and the
// pixel loop inside, so every inner loop runs over P independent lanes with no loop-carried
// dependence and GCC vectorises it (branches become blends, exp is a polynomial below). For
// contiguous fp32/fp64 logits the tile rows are read in place (row k = base + k·H·W); otherwise
// (fp16/bf16, channels_last, other strides) the tile is converted/transposed once into a small
// fp32 buffer that stays in cache for the few passes over it. The hot loops are compiled for
// three instruction sets (baseline x86-64, AVX2+FMA, AVX-512) and picked at run time (isa.h).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "../ocr_host.h"
#include "../ocr_pixel.h"
#include "../ocr_thread.h"

#include "isa.h"
#include "ocr_tiles.h"

namespace ocr {
namespace {

using namespace ocr::cpu;
namespace cpu_isa = ocr_kernels::cpu_isa;

// Entry points compiled for each instruction set of isa.h; the tile code above is always_inline
// so each instantiates its own copy.
#define OCR_ENTRY_POINTS(ISA, TARGET)                                                          \
  template <typename scalar_t, typename acc_t, bool CE>                                        \
  TARGET void forward_##ISA(const Args<scalar_t, acc_t>& A, int64_t t0, int64_t t1) {          \
    forward_tiles<scalar_t, acc_t, CE>(A, t0, t1);                                             \
  }                                                                                            \
  template <typename scalar_t, typename acc_t, bool CE>                                        \
  TARGET void backward_##ISA(const Args<scalar_t, acc_t>& A, int64_t t0, int64_t t1) {         \
    backward_tiles<scalar_t, acc_t, CE>(A, t0, t1);                                            \
  }
OCR_ENTRY_POINTS(default, )
#if OCR_KERNELS_ISA_DISPATCH
OCR_ENTRY_POINTS(avx2, OCR_AVX2_TARGET)
// AVX-512 (16 lanes) roughly halves the instructions of the exp-bound class loops: at 81 classes
// the kernels are compute-bound, not memory-bound.
OCR_ENTRY_POINTS(avx512, OCR_AVX512_TARGET)
#endif

// Tile width: keep a tile of the logits (C1 × P values) within ~64 KiB (L2-resident across the
// passes; measured slightly faster than 32 KiB), P a multiple of 16.
int64_t tile_width(int64_t C1, int64_t elem) {
  int64_t p = (64 * 1024) / (C1 * elem);
  p = (p / 16) * 16;
  return std::max<int64_t>(16, std::min<int64_t>(512, p));
}

template <typename scalar_t, typename acc_t, bool CE>
void run_tiles(const Args<scalar_t, acc_t>& A, bool backward) {
  const int64_t tiles = A.zl.B * ((A.zl.N + A.P - 1) / A.P);
  if (tiles == 0) return;
  auto work = [&](int64_t t0, int64_t t1) {
#if OCR_KERNELS_ISA_DISPATCH
    if (cpu_isa::have_avx512()) {
      if (backward) backward_avx512<scalar_t, acc_t, CE>(A, t0, t1);
      else forward_avx512<scalar_t, acc_t, CE>(A, t0, t1);
      return;
    }
    if (cpu_isa::have_avx2()) {
      if (backward) backward_avx2<scalar_t, acc_t, CE>(A, t0, t1);
      else forward_avx2<scalar_t, acc_t, CE>(A, t0, t1);
      return;
    }
#endif
    if (backward) backward_default<scalar_t, acc_t, CE>(A, t0, t1);
    else forward_default<scalar_t, acc_t, CE>(A, t0, t1);
  };
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), tiles);
  if (threads <= 1 || tiles * A.P * A.zl.C1 < (int64_t(1) << 15) || at::in_parallel_region()) {
    work(0, tiles);
    return;
  }
  // Threads take chunks of tiles from a shared counter rather than one fixed share each: a
  // call of a few milliseconds must not wait for a thread the OS has descheduled (shared or
  // oversubscribed machines); whichever thread runs does the remaining work.
  const int64_t chunk = std::max<int64_t>(1, tiles / (threads * 8));
  std::atomic<int64_t> next{0};
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    for (;;) {
      const int64_t t0 = next.fetch_add(chunk);
      if (t0 >= tiles) break;
      work(t0, std::min(tiles, t0 + chunk));
    }
  });
}

template <typename scalar_t, typename acc_t>
Args<scalar_t, acc_t> make_args(const at::Tensor& z, const at::Tensor& ic, const at::Tensor& prior,
                                double margin, double threshold, int64_t group, int64_t pixels) {
  Args<scalar_t, acc_t> A{};
  A.z = z.data_ptr<scalar_t>();
  A.zl = layout3(z);
  A.ic = ic.data_ptr<uint8_t>();
  A.prior = prior.numel() ? prior.data_ptr<acc_t>() : nullptr;
  A.margin = (acc_t)margin;
  A.threshold = (acc_t)threshold;
  A.group = (int)group;
  A.pixels = (int)pixels;
  A.P = tile_width(A.zl.C1, sizeof(acc_t));
  return A;
}

// ---- the torch-facing CPU kernels ---------------------------------------------------------------

// ocr_loss_map's mask (ocr_thread.h mask_words) from the loss map, contiguous [B, N], after the
// kernel: a word per 32 pixels, the tiles of run_tiles need not align with the words.
template <typename acc_t>
void pack_mask(const acc_t* loss, int64_t B, int64_t N, int32_t* out) {
  const int64_t W = mask_words(N);
  at::parallel_for(0, B * W, 2048, [&](int64_t w0, int64_t w1) {
    for (int64_t w = w0; w < w1; ++w) {
      const int64_t q0 = (w % W) * 32, n = std::min<int64_t>(32, N - q0);
      const acc_t* l = loss + (w / W) * N + q0;
      uint32_t bits = 0;
      for (int64_t j = 0; j < n; ++j) bits |= (uint32_t)(l[j] != (acc_t)0) << j;
      out[w] = (int32_t)bits;
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_cpu(const at::Tensor& logits,
                                               const c10::optional<at::Tensor>& target,
                                               const at::Tensor& tags,
                                               const c10::optional<at::Tensor>& prior,
                                               double margin, double threshold, int64_t group,
                                               int64_t pixels, int64_t ignore_index) {
  const Prepared P = prepare(logits, target, tags, prior, group, pixels);
  at::Tensor ocr_map = new_map(P.z);
  at::Tensor ce_map = P.ce() ? new_map(P.z) : at::Tensor();
  at::Tensor mask = P.ce() ? at::Tensor() : new_mask(P.z);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, P.z.scalar_type(), "ocr_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    auto A = make_args<scalar_t, acc_t>(P.z, P.ic, P.prior, margin, threshold, group, pixels);
    A.ocr_out = ocr_map.data_ptr<acc_t>();
    if (P.ce()) {
      A.target = P.target.data_ptr<int64_t>();
      A.tl = layout2(P.target);
      A.ignore_index = ignore_index;
      A.ce_out = ce_map.data_ptr<acc_t>();
      run_tiles<scalar_t, acc_t, true>(A, false);
    } else {
      run_tiles<scalar_t, acc_t, false>(A, false);
      pack_mask(ocr_map.data_ptr<acc_t>(), A.zl.B, A.zl.N, mask.data_ptr<int32_t>());
    }
  });
  return {ocr_map, ce_map, mask};
}

at::Tensor backward_cpu(const at::Tensor& grad_ocr_in, const c10::optional<at::Tensor>& grad_ce_in,
                        const at::Tensor& logits, const c10::optional<at::Tensor>& target,
                        const at::Tensor& tags, const c10::optional<at::Tensor>& prior,
                        const at::Tensor& loss_in, const at::Tensor& mask_in,
                        double threshold, int64_t group, int64_t pixels, int64_t ignore_index) {
  const Prepared P = prepare(logits, target, tags, prior, group, pixels);
  const at::Tensor g_ocr = map_arg("grad_map", grad_ocr_in, P);
  const at::Tensor loss = map_arg("loss_map", loss_in, P);
  const at::Tensor g_ce = grad_ce_arg(grad_ce_in, P);
  // checked as the CUDA kernel reads it; the CPU tiles read the loss map, in cache, instead
  if (!P.ce()) mask_arg(mask_in, P);
  at::Tensor grad = grad_like(logits);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, P.z.scalar_type(), "ocr_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    auto A = make_args<scalar_t, acc_t>(P.z, P.ic, P.prior, 0.0, threshold, group, pixels);
    A.grad = grad.data_ptr<scalar_t>();
    A.gl = layout3(grad);
    A.loss = loss.data_ptr<acc_t>();
    A.ll = layout2(loss);
    A.g_ocr = g_ocr.data_ptr<acc_t>();
    A.gol = layout2(g_ocr);
    if (P.ce()) {
      A.target = P.target.data_ptr<int64_t>();
      A.tl = layout2(P.target);
      A.ignore_index = ignore_index;
      A.g_ce = g_ce.data_ptr<acc_t>();
      A.gcl = layout2(g_ce);
      run_tiles<scalar_t, acc_t, true>(A, true);
    } else {
      run_tiles<scalar_t, acc_t, false>(A, true);
    }
  });
  return grad;
}

// ---- the CUDA kernels' code run on the CPU (test hooks) ------------------------------------------

// An image's tiles as the unit-stride path walks them: kBlockThreads·kThreadPixels pixels, the
// last tile ending at the image's last pixel (overlapping the one before) where the image holds
// at least one tile; a warp owns 32·kThreadPixels consecutive pixels of a tile.
struct KernelTiles {
  int64_t N, tile, per_image;
  bool shifted;
  explicit KernelTiles(int64_t n)
      : N(n), tile(kBlockThreads * kThreadPixels), per_image((n + tile - 1) / tile),
        shifted(n >= tile) {}
  int64_t start(int64_t chunk) const {
    const int64_t s = chunk * tile;
    return shifted && s > N - tile ? N - tile : s;
  }
};

// An image's class list as the kernels' build_class_list writes it (IC classes, then OC, each
// ascending) into cls, and the ThreadArgs over it. ic: the image's row of the IC mask.
template <typename acc_t>
ThreadArgs<acc_t> image_classes(const uint8_t* ic, int C1, std::vector<int>& cls,
                                const acc_t* prior, double margin, double threshold, int pixels) {
  int nic = 0;
  for (int k = 0; k < C1; ++k) nic += ic[k] != 0;
  for (int k = 0, ni = 0, no = nic; k < C1; ++k) cls[ic[k] ? ni++ : no++] = k;
  return ThreadArgs<acc_t>{cls.data(), nic, C1 - nic, C1, prior, (acc_t)margin, (acc_t)threshold,
                           pixels};
}

// Logit (b, q, k) and the gradient's element (b, q, k) through their strides (A.z, A.grad).
template <typename scalar_t, typename acc_t>
acc_t logit_at(const Args<scalar_t, acc_t>& A, int64_t b, int64_t q, int k) {
  return static_cast<acc_t>(A.z[b * A.zl.sB + q * A.zl.sN + k * A.zl.sC]);
}
template <typename scalar_t, typename acc_t>
void store_grad_at(const Args<scalar_t, acc_t>& A, int64_t b, int64_t q, int k, acc_t d) {
  A.grad[b * A.gl.sB + q * A.gl.sN + k * A.gl.sC] = static_cast<scalar_t>(d);
}

// A hook's call as the kernels see it: make_args' and the gradient, the maps and the target.
template <typename scalar_t, typename acc_t>
Args<scalar_t, acc_t> hook_args(const Prepared& P, at::Tensor& grad, at::Tensor& ocr_map,
                                at::Tensor& ce_map, double margin, double threshold, int group,
                                int pixels) {
  auto A = make_args<scalar_t, acc_t>(P.z, P.ic, P.prior, margin, threshold, group, pixels);
  A.grad = grad.data_ptr<scalar_t>();
  A.gl = layout3(grad);
  A.ocr_out = ocr_map.data_ptr<acc_t>();
  A.ce_out = ce_map.data_ptr<acc_t>();
  if (P.ce()) {
    A.target = P.target.data_ptr<int64_t>();
    A.tl = layout2(P.target);
  }
  return A;
}

// f(std::integral_constant<int, GROUP>) for the group_split code `group`.
template <typename F>
void with_group_code(int64_t group, const F& f) {
  if (group == GROUP_ADA) f(std::integral_constant<int, GROUP_ADA>{});
  else if (group == GROUP_MAX) f(std::integral_constant<int, GROUP_MAX>{});
  else f(std::integral_constant<int, GROUP_ALL>{});
}

// The per-thread functions of ocr_thread.h, run exactly as the CUDA kernel runs them: a test hook
// so that CI checks the GPU's code on the CPU. Pixels are walked in the kernel's tiles and warps
// (32 threads of kThreadPixels pixels, 32 apart; an image of at least one tile as the unit-stride
// path does: its last tile ends at its last pixel, overlapping the one before). The forward runs
// over the whole image first and, without a target, writes the loss mask the kernel's way
// (store_mask: a warp's ballots in an aligned tile, the funnel-shifted words of a shifted last
// tile) and checks it against the loss map; then the backward of each warp is the kernel's: the
// ballots of its pixels with a gradient (read only where the mask has a bit), then either zeros
// for the others and ceil(k / 32) rounds of one pixel a lane over the compacted slots, or (a
// fuller warp) kThreadPixels pixels a lane. Returns (ce_map, ocr_map, grad) with grad for the
// upstream gradients (grad_ce, grad_ocr) and σ recovered from ocr_map.
template <typename scalar_t, typename acc_t, int GROUP, bool CE>
void pixelwise_image(const Prepared& P, const at::Tensor& g_ocr, const at::Tensor& g_ce,
                     at::Tensor& ocr_map, at::Tensor& ce_map, at::Tensor& grad, double margin,
                     double threshold, int pixels, int64_t ignore_index) {
  constexpr int PPT = kThreadPixels;
  constexpr int kWarps = kBlockThreads / 32;
  const auto A = hook_args<scalar_t, acc_t>(P, grad, ocr_map, ce_map, margin, threshold, GROUP,
                                            pixels);
  const Layout3 zl = A.zl;
  const Layout2 gol = layout2(g_ocr), tl = A.tl;
  const Layout2 gcl = CE ? layout2(g_ce) : Layout2{0, 0};
  acc_t *om = A.ocr_out, *cm = A.ce_out;
  const int64_t* tp = A.target;
  const acc_t* gop = g_ocr.data_ptr<acc_t>();
  const acc_t* gcp = CE ? g_ce.data_ptr<acc_t>() : nullptr;
  const int C1 = (int)zl.C1;
  const int64_t N = zl.N;
  const KernelTiles tiles(N);
  const int64_t tile = tiles.tile, per_image = tiles.per_image;
  const int64_t W = mask_words(N);
  // unwritten words keep a pattern that the check below catches
  std::vector<uint32_t> mask(W);
  auto tile_start = [&](int64_t chunk) { return tiles.start(chunk); };
  std::vector<int> cls(C1);
  for (int64_t b = 0; b < zl.B; ++b) {
    const ThreadArgs<acc_t> T = image_classes(A.ic + b * C1, C1, cls, A.prior, margin, threshold,
                                              pixels);
    auto z_at = [&](int64_t q, int k) { return logit_at(A, b, q, k); };
    auto store_at = [&](int64_t q, int k, acc_t d) { store_grad_at(A, b, q, k, d); };
    std::fill(mask.begin(), mask.end(), 0xa5a5a5a5u);
    for (int64_t chunk = 0; chunk < per_image; ++chunk) {  // the forward kernel
      const int64_t s = tile_start(chunk);
      uint32_t ballots[kWarps * PPT];
      for (int warp = 0; warp < kWarps; ++warp) {
        const int64_t w0 = s + warp * 32 * PPT;
        unsigned m[PPT] = {};
        for (int lane = 0; lane < 32; ++lane) {
          bool valid[PPT];
          int64_t t[PPT];
          for (int i = 0; i < PPT; ++i) {
            const int64_t q = w0 + i * 32 + lane;
            valid[i] = q < N;
            t[i] = CE && valid[i] ? tp[b * tl.sB + q * tl.sN] : 0;
          }
          auto zf = [&](int k, int i) -> acc_t {
            return valid[i] ? z_at(w0 + i * 32 + lane, k) : (acc_t)0;
          };
          acc_t loss[PPT], ce[PPT];
          thread_forward<acc_t, GROUP, CE, PPT>(zf, T, t, ignore_index, loss, ce);
          for (int i = 0; i < PPT; ++i) {
            if (!valid[i]) continue;
            om[b * N + w0 + i * 32 + lane] = loss[i];
            cm[b * N + w0 + i * 32 + lane] = CE ? ce[i] : (acc_t)0;
            m[i] |= (unsigned)(loss[i] != (acc_t)0) << lane;
          }
        }
        for (int i = 0; i < PPT; ++i) {
          ballots[warp * PPT + i] = m[i];
          if ((s & 31) == 0 && w0 + 32 * i < N) mask[(w0 >> 5) + i] = m[i];
        }
      }
      if (s & 31) {  // store_mask_shifted
        const int n = kWarps * PPT;
        const int64_t first_new = (per_image - 1) * tile >> 5;
        for (int t = 0; t < n; ++t) {
          const int64_t word = (s >> 5) + 1 + t;
          if (word >= first_new) mask[word] = mask_word_shifted(ballots, n, t, (int)(s & 31));
        }
      }
    }
    if (!CE) {
      for (int64_t q = 0; q < W * 32; ++q) {
        const bool want = q < N && om[b * N + q] != (acc_t)0;
        TORCH_CHECK(mask_bit(mask.data(), q) == want, "ocr_kernels: _pixelwise_seg_ocr: mask bit ",
                    q, " of image ", b, " is ", !want, ", the loss map says ", want);
      }
    }
    auto read = [&](int64_t q) {
      if (!CE && !mask_bit(mask.data(), q)) return PixelGrad<acc_t>{};
      return pixel_grad<acc_t, CE>(
          [&] { return om[b * N + q]; }, [&] { return gop[b * gol.sB + q * gol.sN]; },
          [&] { return tp[b * tl.sB + q * tl.sN]; }, [&] { return gcp[b * gcl.sB + q * gcl.sN]; },
          ignore_index);
    };
    for (int64_t chunk = 0; chunk < per_image; ++chunk)  // the backward kernel
      for (int warp = 0; warp < kWarps; ++warp) {
        const int64_t w0 = tile_start(chunk) + warp * 32 * PPT;
        bool valid[32][PPT], active[32][PPT];
        unsigned m[PPT] = {};
        PixelGrad<acc_t> pg[32][PPT];
        for (int lane = 0; lane < 32; ++lane)
          for (int i = 0; i < PPT; ++i) {
            const int64_t q = w0 + i * 32 + lane;
            valid[lane][i] = q < N;
            pg[lane][i] = valid[lane][i] ? read(q) : PixelGrad<acc_t>{};
            active[lane][i] = pg[lane][i].active;
            m[i] |= (unsigned)active[lane][i] << lane;
          }
        const int k = warp_active<PPT>(m);
        if (!warp_compacts(k)) {
          for (int lane = 0; lane < 32; ++lane) {
            acc_t l[PPT], a[PPT], gce[PPT];
            int64_t t[PPT];
            for (int i = 0; i < PPT; ++i) {
              const bool on = active[lane][i];
              l[i] = on ? pg[lane][i].loss : (acc_t)0;
              a[i] = on ? pg[lane][i].a : (acc_t)0;
              gce[i] = on ? pg[lane][i].gce : (acc_t)0;
              t[i] = pg[lane][i].t;
            }
            auto zf = [&](int c, int i) -> acc_t {
              return active[lane][i] ? z_at(w0 + i * 32 + lane, c) : (acc_t)0;
            };
            auto store = [&](int c, int i, acc_t d) {
              if (valid[lane][i]) store_at(w0 + i * 32 + lane, c, d);
            };
            thread_backward<acc_t, GROUP, CE, PPT>(zf, store, T, l, a, gce, t);
          }
          continue;
        }
        uint8_t slots[32 * PPT];
        for (int lane = 0; lane < 32; ++lane)
          for (int i = 0; i < PPT; ++i)
            if (active[lane][i]) slots[warp_slot<PPT>(m, i, lane)] = (uint8_t)(i * 32 + lane);
        for (int lane = 0; lane < 32; ++lane) {
          auto zeros = [&](int c, int i, acc_t d) {
            if (valid[lane][i]) store_at(w0 + i * 32 + lane, c, d);
          };
          thread_backward_zeros<acc_t, PPT>(zeros, active[lane], C1);
        }
        for (int r = 0, rounds = (k + 31) >> 5; r < rounds; ++r)
          for (int lane = 0; lane < 32; ++lane)
            compacted_round<acc_t, GROUP, CE>(T, slots, k, r, lane, w0, read, z_at, store_at);
      }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> pixelwise_seg_ocr_cpu(
    const at::Tensor& logits_in, const c10::optional<at::Tensor>& target_in,
    const at::Tensor& tags, const c10::optional<at::Tensor>& prior_in,
    const c10::optional<at::Tensor>& grad_ce_in, const at::Tensor& grad_ocr_in, double margin,
    double threshold, int64_t group, int64_t pixels, int64_t ignore_index) {
  const Prepared P = prepare(logits_in, target_in, tags, prior_in, group, pixels);
  const at::Tensor g_ocr = map_arg("grad_ocr", grad_ocr_in, P);
  const at::Tensor g_ce = grad_ce_arg(grad_ce_in, P);
  at::Tensor ocr_map = new_map(P.z), ce_map = at::zeros_like(ocr_map);
  at::Tensor grad = grad_like(logits_in);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, P.z.scalar_type(), "ocr_pixelwise_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    auto run = [&](auto group_c, auto ce_c) {
      pixelwise_image<scalar_t, acc_t, decltype(group_c)::value, decltype(ce_c)::value>(
          P, g_ocr, g_ce, ocr_map, ce_map, grad, margin, threshold, (int)pixels, ignore_index);
    };
    auto with_group = [&](auto ce_c) { with_group_code(group, [&](auto g) { run(g, ce_c); }); };
    if (P.ce()) with_group(std::true_type{});
    else with_group(std::false_type{});
  });
  return {ce_map, ocr_map, grad};
}

// thread_objective run exactly as objective_kernel runs it (the unit-stride path): KernelTiles'
// tiles, warps of 32 lanes of kThreadPixels pixels 32 apart, each lane's targets, CE factors
// (objective_pixel) and OCR factor coef[1], and the warp's oc_targets (any lane's pixel with a
// non-ignored OC target: __any_sync in the kernel) for the SPLIT of the OC class loop.
template <typename scalar_t, typename acc_t, int GROUP>
void pixelwise_objective_image(const Prepared& P, const at::Tensor& ce_weight, const acc_t* coef,
                               at::Tensor& ocr_map, at::Tensor& ce_map, at::Tensor& grad,
                               double margin, double threshold, int pixels, int64_t ignore_index) {
  constexpr int PPT = kThreadPixels;
  constexpr int kWarps = kBlockThreads / 32;
  const auto A = hook_args<scalar_t, acc_t>(P, grad, ocr_map, ce_map, margin, threshold, GROUP,
                                            pixels);
  const bool weighted = ce_weight.defined();
  const Layout2 wl = weighted ? layout2(ce_weight) : Layout2{0, 0};
  const acc_t* wp = weighted ? ce_weight.data_ptr<acc_t>() : nullptr;
  const int C1 = (int)A.zl.C1;
  const int64_t N = A.zl.N;
  const KernelTiles tiles(N);
  std::vector<int> cls(C1);
  for (int64_t b = 0; b < A.zl.B; ++b) {
    const uint8_t* ic = A.ic + b * C1;
    const ThreadArgs<acc_t> T = image_classes(ic, C1, cls, A.prior, margin, threshold, pixels);
    for (int64_t chunk = 0; chunk < tiles.per_image; ++chunk)
      for (int warp = 0; warp < kWarps; ++warp) {
        const int64_t w0 = tiles.start(chunk) + warp * 32 * PPT;
        int64_t t[32][PPT];
        acc_t gce[32][PPT], a[PPT];
        for (int i = 0; i < PPT; ++i) a[i] = coef[1];
        bool oc_targets = false;
        for (int lane = 0; lane < 32; ++lane)
          for (int i = 0; i < PPT; ++i) {
            const int64_t q = w0 + i * 32 + lane;
            t[lane][i] = q < N ? A.target[b * A.tl.sB + q * A.tl.sN] : ignore_index;
            oc_targets |= objective_pixel(t[lane][i], ignore_index, coef[0],
                                          weighted ? wp + b * wl.sB + q * wl.sN : nullptr, ic, C1,
                                          &gce[lane][i]);
          }
        for (int lane = 0; lane < 32; ++lane) {
          auto valid = [&](int i) { return w0 + i * 32 + lane < N; };
          auto zf = [&](int k, int i) -> acc_t {
            return valid(i) ? logit_at(A, b, w0 + i * 32 + lane, k) : (acc_t)0;
          };
          auto store = [&](int k, int i, acc_t d) {
            if (valid(i)) store_grad_at(A, b, w0 + i * 32 + lane, k, d);
          };
          acc_t loss[PPT], ce[PPT];
          thread_objective<acc_t, GROUP, PPT, decltype(zf), decltype(store), true>(
              zf, store, T, t[lane], ignore_index, a, gce[lane], loss, ce, oc_targets);
          for (int i = 0; i < PPT; ++i) {
            if (!valid(i)) continue;
            A.ocr_out[b * N + w0 + i * 32 + lane] = loss[i];
            A.ce_out[b * N + w0 + i * 32 + lane] = ce[i];
          }
        }
      }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> pixelwise_seg_objective_cpu(
    const at::Tensor& logits, const at::Tensor& target, const at::Tensor& tags,
    const c10::optional<at::Tensor>& prior, const c10::optional<at::Tensor>& ce_weight_in,
    const at::Tensor& coef_in, double margin, double threshold, int64_t group, int64_t pixels,
    int64_t ignore_index) {
  const Prepared P = prepare(logits, target, tags, prior, group, pixels);
  const at::Tensor ce_weight = ce_weight_arg(ce_weight_in, P);
  const at::Tensor coef = coef_arg(coef_in, P);
  at::Tensor ocr_map = new_map(P.z), ce_map = new_map(P.z);
  at::Tensor grad = grad_like(logits);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, P.z.scalar_type(), "ocr_pixelwise_objective_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    with_group_code(group, [&](auto g) {
      pixelwise_objective_image<scalar_t, acc_t, decltype(g)::value>(
          P, ce_weight, coef.data_ptr<acc_t>(), ocr_map, ce_map, grad, margin, threshold,
          (int)pixels, ignore_index);
    });
  });
  return {ce_map, ocr_map, grad};
}

// seg_ocr_objective's backward on any device: grad *= g unless g == 1 (read on the host here;
// the CUDA kernel decides on the device).
void scale_grad_cpu(at::Tensor& grad, const at::Tensor& g) {
  check_scale_grad(grad, g);
  if (g.item<double>() != 1.0) grad.mul_(g);
}

}  // namespace

TORCH_LIBRARY_IMPL(ocr_kernels, CPU, m) {
  Ops<forward_cpu, backward_cpu>::register_impls(m);
  m.impl("_pixelwise_seg_ocr", &pixelwise_seg_ocr_cpu);
  m.impl("_pixelwise_seg_objective", &pixelwise_seg_objective_cpu);
  m.impl("scale_grad_", &scale_grad_cpu);
}

}  // namespace ocr
