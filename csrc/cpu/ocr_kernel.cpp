// CPU kernels of the OCR ops (and of the fused segmentation maps).
//
// Work unit: a tile of up to P consecutive pixels of one image. The class loop is outside and the
// pixel loop inside, so every inner loop runs over P independent lanes with no loop-carried
// dependence and GCC vectorises it (branches become blends, exp is a polynomial below). For
// contiguous fp32/fp64 logits the tile rows are read in place (row k = base + k·H·W); otherwise
// (fp16/bf16, channels_last, other strides) the tile is converted/transposed once into a small
// fp32 buffer that stays in cache for the few passes over it. The hot loops are compiled twice
// (baseline x86-64 and AVX2+FMA) and picked at run time.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "../ocr_host.h"
#include "../ocr_pixel.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define OCR_X86_DISPATCH 1
#define OCR_INLINE __attribute__((always_inline)) inline
#else
#define OCR_X86_DISPATCH 0
#define OCR_INLINE inline
#endif

namespace ocr {
namespace {

// exp for the vectorised loops: Cody-Waite reduction and the Cephes polynomial (about 1 ulp on
// [-87, 88]); exactly 0 below -87, where every call site wants 0 (arguments here are <= ~0).
// Written branch-free so that loops calling it vectorise; std::exp would not.
OCR_INLINE float vexp(float x) {
  float xc = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  float n = xc * 1.44269504088896341f + 12582912.0f;  // 1.5·2^23: rounds to nearest
  n = n - 12582912.0f;
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r * r + r + 1.0f;
  int32_t bits = ((int32_t)n + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return x < -87.0f ? 0.0f : y * scale;
}
OCR_INLINE double vexp(double x) { return std::exp(x); }

template <typename scalar_t, typename acc_t>
struct Args {
  // logits (b, k, p) and the gradient written by the backward
  const scalar_t* z;
  Layout3 zl;
  scalar_t* grad;
  Layout3 gl;
  const uint8_t* ic;  // [B, C1]
  const acc_t* prior;  // [C1, C1] (ada only)
  acc_t margin, threshold;
  int group, pixels;
  // seg: target [B, *spatial] int64 (null: no cross-entropy term)
  const int64_t* target;
  Layout2 tl;
  int64_t ignore_index;
  // forward outputs, contiguous [B, N]
  acc_t* ocr_out;
  acc_t* ce_out;
  // backward inputs
  const acc_t* loss;
  Layout2 ll;
  const acc_t* g_ocr;
  Layout2 gol;
  const acc_t* g_ce;
  Layout2 gcl;
  int64_t P;  // tile width
};

// Per-thread scratch for one tile.
template <typename acc_t>
struct Scratch {
  std::vector<acc_t> buf, obuf;
  std::vector<acc_t> gmax, amax, ocmax, icmin, s_all, s_oc, s_ic, lse_ic, lse_oc, lse_all, pA,
      inv_s, a, gc;
  std::vector<int32_t> pred, anchor, tgt;
  std::vector<uint8_t> member, sel;
  Scratch(int64_t C1, int64_t P) {
    buf.resize(C1 * P);
    obuf.resize(C1 * P);
    for (auto* v : {&gmax, &amax, &ocmax, &icmin, &s_all, &s_oc, &s_ic, &lse_ic, &lse_oc, &lse_all,
                    &pA, &inv_s, &a, &gc})
      v->resize(P);
    pred.resize(P);
    anchor.resize(P);
    tgt.resize(P);
    member.resize(C1 * P);
    sel.resize(P);
  }
};

// Rows of one tile: row k is rows + k·rs, n valid lanes.
template <typename scalar_t, typename acc_t>
OCR_INLINE const acc_t* load_tile(const Args<scalar_t, acc_t>& A, Scratch<acc_t>& S, int64_t b,
                                  int64_t p0, int64_t n, int64_t* rs) {
  const Layout3& L = A.zl;
  const scalar_t* base = A.z + b * L.sB + p0 * L.sN;
  if constexpr (std::is_same<scalar_t, acc_t>::value) {
    if (L.sN == 1) {
      *rs = L.sC;
      return base;
    }
  }
  const int64_t P = A.P;
  acc_t* buf = S.buf.data();
  if (L.sN == 1) {
    for (int64_t k = 0; k < L.C1; ++k) {
      const scalar_t* r = base + k * L.sC;
      acc_t* o = buf + k * P;
      for (int64_t p = 0; p < n; ++p) o[p] = static_cast<acc_t>(r[p]);
    }
  } else {  // channels_last and friends: classes contiguous per pixel; transpose into the tile
    for (int64_t p = 0; p < n; ++p) {
      const scalar_t* r = base + p * L.sN;
      for (int64_t k = 0; k < L.C1; ++k) buf[k * P + p] = static_cast<acc_t>(r[k * L.sC]);
    }
  }
  *rs = P;
  return buf;
}

// Per-pixel statistics of a tile (the vectorised counterpart of ocr::pixel_stats).
template <typename acc_t, bool NEED_ALL>
OCR_INLINE void tile_stats(const acc_t* rows, int64_t rs, int64_t n, const uint8_t* ic,
                           bool has_oc, const acc_t* prior, int64_t C1, acc_t threshold,
                           int group, int pixels, Scratch<acc_t>& S, int64_t P) {
  const acc_t NEG = -std::numeric_limits<acc_t>::infinity();
  const acc_t POS = std::numeric_limits<acc_t>::infinity();
  acc_t *gmax = S.gmax.data(), *amax = S.amax.data(), *ocmax = S.ocmax.data(),
        *icmin = S.icmin.data();
  int32_t *pred = S.pred.data(), *anchor = S.anchor.data();
  for (int64_t p = 0; p < n; ++p) {
    gmax[p] = NEG;
    amax[p] = NEG;
    ocmax[p] = NEG;
    icmin[p] = POS;
    pred[p] = 0;
    anchor[p] = 0;
  }
  // pass 1: maxima and argmaxes (strict >: ties keep the lowest index, as torch.argmax)
  for (int64_t k = 0; k < C1; ++k) {
    const acc_t* r = rows + k * rs;
    const int32_t kk = (int32_t)k;
    if (ic[k]) {
      for (int64_t p = 0; p < n; ++p) {
        const acc_t v = r[p];
        const bool g = v > gmax[p];
        gmax[p] = g ? v : gmax[p];
        pred[p] = g ? kk : pred[p];
        const bool a = v > amax[p];
        amax[p] = a ? v : amax[p];
        anchor[p] = a ? kk : anchor[p];
        icmin[p] = v < icmin[p] ? v : icmin[p];
      }
    } else {
      for (int64_t p = 0; p < n; ++p) {
        const acc_t v = r[p];
        const bool g = v > gmax[p];
        gmax[p] = g ? v : gmax[p];
        pred[p] = g ? kk : pred[p];
        ocmax[p] = v > ocmax[p] ? v : ocmax[p];
      }
    }
  }
  // pass 2: sums of exponentials against the maxima
  acc_t *s_all = S.s_all.data(), *s_oc = S.s_oc.data(), *s_ic = S.s_ic.data();
  for (int64_t p = 0; p < n; ++p) {
    s_all[p] = 0;
    s_oc[p] = 0;
    s_ic[p] = 0;
  }
  const bool all_group = group == GROUP_ALL;
  for (int64_t k = 0; k < C1; ++k) {
    const acc_t* r = rows + k * rs;
    if (ic[k]) {
      if (NEED_ALL && all_group) {
        for (int64_t p = 0; p < n; ++p) {
          s_all[p] += vexp(r[p] - gmax[p]);
          s_ic[p] += vexp(icmin[p] - r[p]);
        }
      } else if (NEED_ALL) {
        for (int64_t p = 0; p < n; ++p) s_all[p] += vexp(r[p] - gmax[p]);
      } else if (all_group) {
        for (int64_t p = 0; p < n; ++p) s_ic[p] += vexp(icmin[p] - r[p]);
      }
    } else {
      if (NEED_ALL) {
        for (int64_t p = 0; p < n; ++p) {
          s_all[p] += vexp(r[p] - gmax[p]);
          s_oc[p] += vexp(r[p] - ocmax[p]);
        }
      } else {
        for (int64_t p = 0; p < n; ++p) s_oc[p] += vexp(r[p] - ocmax[p]);
      }
    }
  }
  acc_t *lse_ic = S.lse_ic.data(), *lse_oc = S.lse_oc.data(), *lse_all = S.lse_all.data();
  acc_t *inv_s = S.inv_s.data(), *pA = S.pA.data();
  if (NEED_ALL) {
    for (int64_t p = 0; p < n; ++p) {
      inv_s[p] = acc_t(1) / s_all[p];
      pA[p] = vexp(amax[p] - gmax[p]) * inv_s[p];
      lse_all[p] = gmax[p] + std::log(s_all[p]);
    }
  }
  if (group == GROUP_ADA) {
    // pass 3 (Eq. 9): membership of each IC class, kept for the sum and for the backward
    uint8_t* mem = S.member.data();
    acc_t* gmin = icmin;  // reused: the group's smallest logit (the anchor is always in)
    for (int64_t p = 0; p < n; ++p) gmin[p] = amax[p];
    for (int64_t k = 0; k < C1; ++k) {
      if (!ic[k]) continue;
      const acc_t* r = rows + k * rs;
      uint8_t* mk = mem + k * P;
      const int32_t kk = (int32_t)k;
      for (int64_t p = 0; p < n; ++p) {
        const acc_t v = r[p];
        const acc_t pk = vexp(v - gmax[p]) * inv_s[p];
        const bool in = anchor[p] == kk || ada_member(pA[p], pk, prior[anchor[p] * C1 + k], threshold);
        mk[p] = in;
        gmin[p] = (in && v < gmin[p]) ? v : gmin[p];
      }
    }
    for (int64_t k = 0; k < C1; ++k) {
      if (!ic[k]) continue;
      const acc_t* r = rows + k * rs;
      const uint8_t* mk = mem + k * P;
      for (int64_t p = 0; p < n; ++p) s_ic[p] += mk[p] ? vexp(gmin[p] - r[p]) : acc_t(0);
    }
    for (int64_t p = 0; p < n; ++p) lse_ic[p] = std::log(s_ic[p]) - gmin[p];
  } else if (group == GROUP_ALL) {
    for (int64_t p = 0; p < n; ++p) lse_ic[p] = std::log(s_ic[p]) - icmin[p];
  } else {
    for (int64_t p = 0; p < n; ++p) lse_ic[p] = -amax[p];
  }
  uint8_t* sel = S.sel.data();
  for (int64_t p = 0; p < n; ++p) {
    lse_oc[p] = has_oc ? ocmax[p] + std::log(s_oc[p]) : acc_t(0);
    sel[p] = pixel_selected(ic[pred[p]] != 0, has_oc, pixels);
  }
}

template <typename scalar_t, typename acc_t, bool CE>
OCR_INLINE void forward_tiles(const Args<scalar_t, acc_t>& A, int64_t t0, int64_t t1) {
  const int64_t C1 = A.zl.C1, N = A.zl.N, P = A.P;
  const int64_t tiles = (N + P - 1) / P;
  Scratch<acc_t> S(C1, P);
  const bool need_all = CE || A.group == GROUP_ADA;
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t b = t / tiles, p0 = (t % tiles) * P, n = std::min(P, N - p0);
    const uint8_t* ic = A.ic + b * C1;
    bool has_oc = false;
    for (int64_t k = 0; k < C1; ++k) has_oc |= !ic[k];
    int64_t rs;
    const acc_t* rows = load_tile(A, S, b, p0, n, &rs);
    if (need_all)
      tile_stats<acc_t, true>(rows, rs, n, ic, has_oc, A.prior, C1, A.threshold, A.group, A.pixels, S, P);
    else
      tile_stats<acc_t, false>(rows, rs, n, ic, has_oc, A.prior, C1, A.threshold, A.group, A.pixels, S, P);
    acc_t* out = A.ocr_out + b * N + p0;
    for (int64_t p = 0; p < n; ++p) {
      const acc_t s = S.lse_ic[p] + S.lse_oc[p] + A.margin;
      const acc_t l = softplus_stable(s, vexp(s > 0 ? -s : s));
      out[p] = S.sel[p] ? l : acc_t(0);
    }
    if (CE) {
      const int64_t* tg = A.target + b * A.tl.sB + p0 * A.tl.sN;
      acc_t* ce = A.ce_out + b * N + p0;
      for (int64_t p = 0; p < n; ++p) {
        const int64_t tv = tg[p * A.tl.sN];
        const acc_t zt = rows[clamp_class(tv, C1) * rs + p];
        ce[p] = tv == A.ignore_index ? acc_t(0) : S.lse_all[p] - zt;
      }
    }
  }
}

template <typename scalar_t, typename acc_t>
OCR_INLINE void store_tile(const Args<scalar_t, acc_t>& A, const acc_t* o, int64_t b, int64_t p0,
                           int64_t n) {
  const Layout3& L = A.gl;
  scalar_t* base = A.grad + b * L.sB + p0 * L.sN;
  if (L.sN == 1) {
    for (int64_t k = 0; k < L.C1; ++k) {
      scalar_t* r = base + k * L.sC;
      const acc_t* ok = o + k * A.P;
      for (int64_t p = 0; p < n; ++p) r[p] = static_cast<scalar_t>(ok[p]);
    }
  } else {
    for (int64_t p = 0; p < n; ++p) {
      scalar_t* r = base + p * L.sN;
      for (int64_t k = 0; k < L.C1; ++k) r[k * L.sC] = static_cast<scalar_t>(o[k * A.P + p]);
    }
  }
}

template <typename scalar_t, typename acc_t>
OCR_INLINE void zero_tile(const Args<scalar_t, acc_t>& A, int64_t b, int64_t p0, int64_t n) {
  const Layout3& L = A.gl;
  scalar_t* base = A.grad + b * L.sB + p0 * L.sN;
  for (int64_t k = 0; k < L.C1; ++k)
    for (int64_t p = 0; p < n; ++p) base[k * L.sC + p * L.sN] = scalar_t(0);
}

template <typename scalar_t, typename acc_t, bool CE>
OCR_INLINE void backward_tiles(const Args<scalar_t, acc_t>& A, int64_t t0, int64_t t1) {
  const int64_t C1 = A.zl.C1, N = A.zl.N, P = A.P;
  const int64_t tiles = (N + P - 1) / P;
  Scratch<acc_t> S(C1, P);
  const bool need_all = CE || A.group == GROUP_ADA;
  // Write gradients straight into the output rows when they are contiguous fp32/fp64 runs.
  const bool direct = std::is_same<scalar_t, acc_t>::value && A.gl.sN == 1;
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t b = t / tiles, p0 = (t % tiles) * P, n = std::min(P, N - p0);
    const uint8_t* ic = A.ic + b * C1;
    acc_t *a = S.a.data(), *gc = S.gc.data();
    int32_t* tg = S.tgt.data();
    bool any = false;
    const acc_t* L = A.loss + b * A.ll.sB + p0 * A.ll.sN;
    const acc_t* go = A.g_ocr + b * A.gol.sB + p0 * A.gol.sN;
    for (int64_t p = 0; p < n; ++p) {
      const acc_t l = L[p * A.ll.sN], g = go[p * A.gol.sN];
      // σ(s) from the saved loss; the logits are re-read only for tiles with a gradient
      a[p] = (l > 0 && g != 0) ? g * sigma_from_loss(l) : acc_t(0);
      any |= a[p] != 0;
    }
    if (CE) {
      const int64_t* tp = A.target + b * A.tl.sB + p0 * A.tl.sN;
      const acc_t* gp = A.g_ce + b * A.gcl.sB + p0 * A.gcl.sN;
      for (int64_t p = 0; p < n; ++p) {
        const int64_t tv = tp[p * A.tl.sN];
        tg[p] = (int32_t)clamp_class(tv, C1);
        gc[p] = tv == A.ignore_index ? acc_t(0) : gp[p * A.gcl.sN];
        any |= gc[p] != 0;
      }
    }
    if (!any) {
      zero_tile(A, b, p0, n);
      continue;
    }
    bool has_oc = false;
    for (int64_t k = 0; k < C1; ++k) has_oc |= !ic[k];
    int64_t rs;
    const acc_t* rows = load_tile(A, S, b, p0, n, &rs);
    if (need_all)
      tile_stats<acc_t, true>(rows, rs, n, ic, has_oc, A.prior, C1, A.threshold, A.group, A.pixels, S, P);
    else
      tile_stats<acc_t, false>(rows, rs, n, ic, has_oc, A.prior, C1, A.threshold, A.group, A.pixels, S, P);
    const acc_t *lse_ic = S.lse_ic.data(), *lse_oc = S.lse_oc.data(), *lse_all = S.lse_all.data();
    const int32_t* anchor = S.anchor.data();
    const uint8_t* mem = S.member.data();
    acc_t* obase = direct ? reinterpret_cast<acc_t*>(A.grad + b * A.gl.sB + p0) : S.obuf.data();
    const int64_t ors = direct ? A.gl.sC : P;
    for (int64_t k = 0; k < C1; ++k) {
      const acc_t* r = rows + k * rs;
      acc_t* o = obase + k * ors;
      const int32_t kk = (int32_t)k;
      if (!ic[k]) {
        for (int64_t p = 0; p < n; ++p) o[p] = a[p] != 0 ? a[p] * vexp(r[p] - lse_oc[p]) : acc_t(0);
      } else if (A.group == GROUP_MAX) {
        for (int64_t p = 0; p < n; ++p)
          o[p] = (a[p] != 0 && anchor[p] == kk) ? -a[p] * vexp(-r[p] - lse_ic[p]) : acc_t(0);
      } else if (A.group == GROUP_ALL) {
        for (int64_t p = 0; p < n; ++p) o[p] = a[p] != 0 ? -a[p] * vexp(-r[p] - lse_ic[p]) : acc_t(0);
      } else {
        const uint8_t* mk = mem + k * P;
        for (int64_t p = 0; p < n; ++p)
          o[p] = (a[p] != 0 && mk[p]) ? -a[p] * vexp(-r[p] - lse_ic[p]) : acc_t(0);
      }
      if (CE) {
        for (int64_t p = 0; p < n; ++p)
          o[p] += gc[p] * (vexp(r[p] - lse_all[p]) - (tg[p] == kk ? acc_t(1) : acc_t(0)));
      }
    }
    if (!direct) store_tile(A, S.obuf.data(), b, p0, n);
  }
}

// Entry points compiled for the baseline ISA and for AVX2+FMA; the tile code above is
// always_inline so each instantiates its own copy.
template <typename scalar_t, typename acc_t, bool CE>
void forward_default(const Args<scalar_t, acc_t>& A, int64_t t0, int64_t t1) {
  forward_tiles<scalar_t, acc_t, CE>(A, t0, t1);
}
template <typename scalar_t, typename acc_t, bool CE>
void backward_default(const Args<scalar_t, acc_t>& A, int64_t t0, int64_t t1) {
  backward_tiles<scalar_t, acc_t, CE>(A, t0, t1);
}
#if OCR_X86_DISPATCH
template <typename scalar_t, typename acc_t, bool CE>
__attribute__((target("avx2,fma"))) void forward_avx2(const Args<scalar_t, acc_t>& A, int64_t t0,
                                                       int64_t t1) {
  forward_tiles<scalar_t, acc_t, CE>(A, t0, t1);
}
template <typename scalar_t, typename acc_t, bool CE>
__attribute__((target("avx2,fma"))) void backward_avx2(const Args<scalar_t, acc_t>& A, int64_t t0,
                                                        int64_t t1) {
  backward_tiles<scalar_t, acc_t, CE>(A, t0, t1);
}
bool have_avx2() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
}
#endif

// Tile width: keep a tile of the logits (C1 × P values) within ~32 KiB, P a multiple of 16.
int64_t tile_width(int64_t C1, int64_t elem) {
  int64_t p = (32 * 1024) / (C1 * elem);
  p = (p / 16) * 16;
  return std::max<int64_t>(16, std::min<int64_t>(512, p));
}

template <typename scalar_t, typename acc_t, bool CE>
void run_tiles(const Args<scalar_t, acc_t>& A, bool backward) {
  const int64_t tiles = A.zl.B * ((A.zl.N + A.P - 1) / A.P);
  if (tiles == 0) return;
  at::parallel_for(0, tiles, 1, [&](int64_t t0, int64_t t1) {
#if OCR_X86_DISPATCH
    if (have_avx2()) {
      if (backward) backward_avx2<scalar_t, acc_t, CE>(A, t0, t1);
      else forward_avx2<scalar_t, acc_t, CE>(A, t0, t1);
      return;
    }
#endif
    if (backward) backward_default<scalar_t, acc_t, CE>(A, t0, t1);
    else forward_default<scalar_t, acc_t, CE>(A, t0, t1);
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

std::tuple<at::Tensor, at::Tensor> forward_cpu(const at::Tensor& logits_in,
                                               const c10::optional<at::Tensor>& target_in,
                                               const at::Tensor& tags,
                                               const c10::optional<at::Tensor>& prior_in,
                                               double margin, double threshold, int64_t group,
                                               int64_t pixels, int64_t ignore_index) {
  check_common(logits_in, tags, group, pixels);
  const at::Tensor z = logits_for_kernel(logits_in);
  const at::ScalarType acc = math_dtype(z.scalar_type());
  const at::Tensor ic = ic_mask(tags);
  const at::Tensor prior = prior_for_kernel(prior_in, group, acc, z);
  at::Tensor ocr_map = new_map(z);
  const bool ce = target_in.has_value();
  at::Tensor target, ce_map;
  if (ce) {
    target = target_for_kernel(*target_in, z);
    ce_map = new_map(z);
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "ocr_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    auto A = make_args<scalar_t, acc_t>(z, ic, prior, margin, threshold, group, pixels);
    A.ocr_out = ocr_map.data_ptr<acc_t>();
    if (ce) {
      A.target = target.data_ptr<int64_t>();
      A.tl = layout2(target);
      A.ignore_index = ignore_index;
      A.ce_out = ce_map.data_ptr<acc_t>();
      run_tiles<scalar_t, acc_t, true>(A, false);
    } else {
      run_tiles<scalar_t, acc_t, false>(A, false);
    }
  });
  return {ocr_map, ce_map};
}

at::Tensor backward_cpu(const at::Tensor& grad_ocr_in, const c10::optional<at::Tensor>& grad_ce_in,
                        const at::Tensor& logits_in, const c10::optional<at::Tensor>& target_in,
                        const at::Tensor& tags, const c10::optional<at::Tensor>& prior_in,
                        const at::Tensor& loss_in, double threshold, int64_t group,
                        int64_t pixels, int64_t ignore_index) {
  check_common(logits_in, tags, group, pixels);
  const at::Tensor z = logits_for_kernel(logits_in);
  const at::ScalarType acc = math_dtype(z.scalar_type());
  const at::Tensor ic = ic_mask(tags);
  const at::Tensor prior = prior_for_kernel(prior_in, group, acc, z);
  check_map("grad_map", grad_ocr_in, z);
  check_map("loss_map", loss_in, z);
  const at::Tensor g_ocr = map_for_kernel(grad_ocr_in, acc);
  const at::Tensor loss = map_for_kernel(loss_in, acc);
  const bool ce = target_in.has_value();
  at::Tensor target, g_ce;
  if (ce) {
    target = target_for_kernel(*target_in, z);
    TORCH_CHECK(grad_ce_in.has_value(), "ocr_kernels: grad_ce is required with a target");
    check_map("grad_ce", *grad_ce_in, z);
    g_ce = map_for_kernel(*grad_ce_in, acc);
  }
  at::Tensor grad = grad_like(logits_in);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "ocr_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    auto A = make_args<scalar_t, acc_t>(z, ic, prior, 0.0, threshold, group, pixels);
    A.grad = grad.data_ptr<scalar_t>();
    A.gl = layout3(grad);
    A.loss = loss.data_ptr<acc_t>();
    A.ll = layout2(loss);
    A.g_ocr = g_ocr.data_ptr<acc_t>();
    A.gol = layout2(g_ocr);
    if (ce) {
      A.target = target.data_ptr<int64_t>();
      A.tl = layout2(target);
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

at::Tensor ocr_loss_map_cpu(const at::Tensor& logits, const at::Tensor& tags,
                            const c10::optional<at::Tensor>& prior, double margin,
                            double threshold, int64_t group, int64_t pixels) {
  return std::get<0>(forward_cpu(logits, c10::nullopt, tags, prior, margin, threshold, group,
                                 pixels, 0));
}

at::Tensor ocr_loss_map_backward_cpu(const at::Tensor& grad_map, const at::Tensor& logits,
                                     const at::Tensor& tags, const c10::optional<at::Tensor>& prior,
                                     const at::Tensor& loss_map, double margin, double threshold,
                                     int64_t group, int64_t pixels) {
  return backward_cpu(grad_map, c10::nullopt, logits, c10::nullopt, tags, prior, loss_map,
                      threshold, group, pixels, 0);
}

std::tuple<at::Tensor, at::Tensor> seg_ocr_loss_maps_cpu(
    const at::Tensor& logits, const at::Tensor& target, const at::Tensor& tags,
    const c10::optional<at::Tensor>& prior, double margin, double threshold, int64_t group,
    int64_t pixels, int64_t ignore_index) {
  auto out = forward_cpu(logits, target, tags, prior, margin, threshold, group, pixels, ignore_index);
  return {std::get<1>(out), std::get<0>(out)};
}

at::Tensor seg_ocr_loss_maps_backward_cpu(const at::Tensor& grad_ce, const at::Tensor& grad_ocr,
                                          const at::Tensor& logits, const at::Tensor& target,
                                          const at::Tensor& tags,
                                          const c10::optional<at::Tensor>& prior,
                                          const at::Tensor& ocr_map, double margin,
                                          double threshold, int64_t group, int64_t pixels,
                                          int64_t ignore_index) {
  return backward_cpu(grad_ocr, grad_ce, logits, target, tags, prior, ocr_map, threshold, group,
                      pixels, ignore_index);
}

// The per-pixel functions of ocr_pixel.h run one pixel at a time, exactly as the CUDA kernel runs
// them: a test hook so that CI checks the GPU's math on the CPU. Returns (ce_map, ocr_map, grad)
// with grad for the upstream gradients (grad_ce, grad_ocr) and σ recovered from ocr_map.
std::tuple<at::Tensor, at::Tensor, at::Tensor> pixelwise_seg_ocr_cpu(
    const at::Tensor& logits_in, const c10::optional<at::Tensor>& target_in,
    const at::Tensor& tags, const c10::optional<at::Tensor>& prior_in,
    const c10::optional<at::Tensor>& grad_ce_in, const at::Tensor& grad_ocr_in, double margin,
    double threshold, int64_t group, int64_t pixels, int64_t ignore_index) {
  check_common(logits_in, tags, group, pixels);
  const at::Tensor z = logits_for_kernel(logits_in);
  const at::ScalarType acc = math_dtype(z.scalar_type());
  const at::Tensor ic = ic_mask(tags);
  const at::Tensor prior = prior_for_kernel(prior_in, group, acc, z);
  const bool ce = target_in.has_value();
  at::Tensor target = ce ? target_for_kernel(*target_in, z) : at::Tensor();
  check_map("grad_ocr", grad_ocr_in, z);
  at::Tensor g_ocr = map_for_kernel(grad_ocr_in, acc);
  at::Tensor g_ce;
  if (ce) {
    TORCH_CHECK(grad_ce_in.has_value(), "ocr_kernels: grad_ce is required with a target");
    check_map("grad_ce", *grad_ce_in, z);
    g_ce = map_for_kernel(*grad_ce_in, acc);
  }
  at::Tensor ocr_map = new_map(z), ce_map = at::zeros_like(ocr_map);
  at::Tensor grad = grad_like(logits_in);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "ocr_pixelwise_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const Layout3 zl = layout3(z), gl = layout3(grad);
    const Layout2 gol = layout2(g_ocr);
    const Layout2 tl = ce ? layout2(target) : Layout2{0, 0};
    const Layout2 gcl = ce ? layout2(g_ce) : Layout2{0, 0};
    const scalar_t* zp = z.data_ptr<scalar_t>();
    scalar_t* gp = grad.data_ptr<scalar_t>();
    const uint8_t* icp = ic.data_ptr<uint8_t>();
    const acc_t* pp = prior.numel() ? prior.data_ptr<acc_t>() : nullptr;
    acc_t* om = ocr_map.data_ptr<acc_t>();
    acc_t* cm = ce_map.data_ptr<acc_t>();
    const int64_t* tp = ce ? target.data_ptr<int64_t>() : nullptr;
    const acc_t* gop = g_ocr.data_ptr<acc_t>();
    const acc_t* gcp = ce ? g_ce.data_ptr<acc_t>() : nullptr;
    for (int64_t b = 0; b < zl.B; ++b) {
      for (int64_t p = 0; p < zl.N; ++p) {
        const scalar_t* zb = zp + b * zl.sB + p * zl.sN;
        auto zf = [&](int64_t k) { return static_cast<acc_t>(zb[k * zl.sC]); };
        const int64_t t = ce ? tp[b * tl.sB + p * tl.sN] : 0;
        acc_t cev = 0;
        const acc_t l = pixel_forward<acc_t>(zf, icp + b * zl.C1, pp, zl.C1, (acc_t)margin,
                                             (acc_t)threshold, (int)group, (int)pixels, ce, t,
                                             ignore_index, &cev);
        om[b * zl.N + p] = l;
        cm[b * zl.N + p] = cev;
        scalar_t* gb = gp + b * gl.sB + p * gl.sN;
        auto store = [&](int64_t k, acc_t v) { gb[k * gl.sC] = static_cast<scalar_t>(v); };
        const acc_t gce = (ce && t != ignore_index) ? gcp[b * gcl.sB + p * gcl.sN] : acc_t(0);
        pixel_backward<acc_t>(zf, store, icp + b * zl.C1, pp, zl.C1, (acc_t)threshold, (int)group,
                              (int)pixels, l, gop[b * gol.sB + p * gol.sN], gce, t);
      }
    }
  });
  return {ce_map, ocr_map, grad};
}

}  // namespace

TORCH_LIBRARY_IMPL(ocr_kernels, CPU, m) {
  m.impl("ocr_loss_map", &ocr_loss_map_cpu);
  m.impl("ocr_loss_map_backward", &ocr_loss_map_backward_cpu);
  m.impl("seg_ocr_loss_maps", &seg_ocr_loss_maps_cpu);
  m.impl("seg_ocr_loss_maps_backward", &seg_ocr_loss_maps_backward_cpu);
  m.impl("_pixelwise_seg_ocr", &pixelwise_seg_ocr_cpu);
}

}  // namespace ocr
