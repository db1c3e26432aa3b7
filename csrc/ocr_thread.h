// What one CUDA thread of the OCR kernels computes (csrc/cuda/ocr_kernel.cu): PPT pixels of one
// image, their classes visited through the image's class list (IC classes first, then OC, each
// ascending), so that no class costs a branch on its tag. The CPU op _pixelwise_seg_ocr runs these
// same functions (csrc/cpu/ocr_kernel.cpp), so CI checks the GPU's code against the reference.
//
// Host and device, no torch or CUDA-library includes (docs/kernel-notes.md). The semantics are
// ocr_pixel.h's (docs/semantics.md §1); the element functions are shared with it.
#pragma once

#include "ocr_pixel.h"

namespace ocr {

// The CUDA kernels' block (threads) and pixels per thread on the unit-pixel-stride path; the CPU
// hook walks the pixels in the same groups.
constexpr int kBlockThreads = 128;
constexpr int kThreadPixels = 4;

constexpr double kLog2e = 1.4426950408889634;
constexpr double kLn2 = 0.6931471805599453;

// fp32 on the GPU: the MUFU approximations (ex2/lg2 within 2 ulp, rcp within 1 ulp). They are
// used only where a relative error of a few ulp per term is harmless: the terms of sums, the
// softmax factors, and logs whose result is added to a maximum (an absolute error of ~1e-7).
// fp64, and the host: the exact functions.
#ifdef __CUDA_ARCH__
#define OCR_MUFU(name, ptx, host)                                  \
  OCR_HD float name(float x) {                                     \
    float y;                                                       \
    asm(ptx " %0, %1;" : "=f"(y) : "f"(x));                        \
    return y;                                                      \
  }
#else
#define OCR_MUFU(name, ptx, host) \
  OCR_HD float name(float x) { return host; }
#endif
OCR_MUFU(f_exp2, "ex2.approx.ftz.f32", exp2f(x))
OCR_MUFU(f_log2, "lg2.approx.ftz.f32", log2f(x))
OCR_MUFU(f_rcp, "rcp.approx.ftz.f32", 1.0f / x)
#undef OCR_MUFU
OCR_HD double f_exp2(double x) { return exp2(x); }
OCR_HD double f_log2(double x) { return log2(x); }
OCR_HD double f_rcp(double x) { return 1.0 / x; }
OCR_HD float f_abs(float x) { return fabsf(x); }
OCR_HD double f_abs(double x) { return fabs(x); }

// log(1 + x) to an absolute error (the result is added to a maximum).
template <typename acc_t>
OCR_HD acc_t f_log1p_abs(acc_t x) { return f_log2((acc_t)1 + x) * (acc_t)kLn2; }

// Online (max, argmax, Σ e^{v − max} − 1) with ONE exp per value: e^{−|v − max|} is the new term
// when v ≤ max and the rescale of the old sum when v is a new maximum. The sum is kept without
// its maximum's own 1 ("rest", −1 when empty), so log Σ = log1p(rest) keeps a confident pixel's
// tiny cross-entropy to relative precision. Ties keep the first (lowest) class.
template <typename acc_t, bool ARG = true>
struct Run {
  acc_t m = neg_inf<acc_t>(), rest = (acc_t)-1;
  int arg = 0;
  OCR_HD void add(acc_t v, int k) {
    const bool gt = v > m;
    const acc_t e = f_exp2(-f_abs(v - m) * (acc_t)kLog2e);
    rest = gt ? rest * e + e : rest + e;
    if (ARG) arg = gt ? k : arg;
    m = gt ? v : m;
  }
  OCR_HD acc_t lse() const { return m + f_log1p_abs(rest); }
  OCR_HD acc_t inv_sum() const { return f_rcp((acc_t)1 + rest); }
};

// The image's classes and the options, as one thread sees them. cls: C1 class indices, the nic
// IC classes (background included) first, then the noc OC classes, each ascending.
template <typename acc_t>
struct ThreadArgs {
  const int* cls;
  int nic, noc, C1;
  const acc_t* prior;  // [C1, C1], GROUP_ADA only
  acc_t margin, threshold;
  int pixels;
};

// Everything the loss and the gradient need of one pixel, from its OC and IC runs.
template <typename acc_t>
struct Merged {
  acc_t gmax, inv_all, rest_all, p_anchor;
  bool pred_in_ic;
};

template <typename acc_t, bool ARG>
OCR_HD Merged<acc_t> merge_runs(const Run<acc_t, ARG>& oc, const Run<acc_t, true>& ic) {
  Merged<acc_t> r;
  // the prediction is IC when its best logit wins, or ties with a lower class index
  r.pred_in_ic = ic.m > oc.m || (ic.m == oc.m && ic.arg < oc.arg);
  const acc_t hm = r.pred_in_ic ? ic.m : oc.m, lm = r.pred_in_ic ? oc.m : ic.m;
  const acc_t hr = r.pred_in_ic ? ic.rest : oc.rest, lr = r.pred_in_ic ? oc.rest : ic.rest;
  r.gmax = hm;
  // an empty run (no OC class) has m = −inf and 1 + rest = 0: its term is 0·0
  r.rest_all = hr + ((acc_t)1 + lr) * f_exp2((lm - hm) * (acc_t)kLog2e);
  r.inv_all = f_rcp((acc_t)1 + r.rest_all);
  r.p_anchor = f_exp2((ic.m - hm) * (acc_t)kLog2e) * r.inv_all;
  return r;
}

// The offset of the anchor's row of the prior (GROUP_ADA: A·C1, an int as the index always was),
// formed once a pixel before a loop over its IC classes (from the anchor, in the loop, it was a
// multiply and a sign-extended 64-bit add a class). An offset, not a pointer: the fused seg
// backward holds these over its class loops, and at 72 registers one more each spilled.
template <typename acc_t, int GROUP>
OCR_HD int anchor_row(const ThreadArgs<acc_t>& T, int anchor) {
  return GROUP == GROUP_ADA ? anchor * T.C1 : 0;
}

// &row[k], k >= 0. On the device one 32x32 -> 64-bit multiply-add: from a signed int index nvcc
// forms a sign-extended 64-bit offset and shifts it (three more instructions a class and pixel).
template <typename T>
OCR_HD const T* row_elem(const T* row, int k) {
#ifdef __CUDA_ARCH__
  uint64_t off;
  asm("mul.wide.u32 %0, %1, %2;" : "=l"(off) : "r"((unsigned)k), "r"((unsigned)sizeof(T)));
  return reinterpret_cast<const T*>(reinterpret_cast<const char*>(row) + off);
#else
  return row + k;
#endif
}

// Eq. 9 for IC class k of a pixel with anchor A (the anchor itself is always in); row:
// anchor_row(T, A). Without CE the two conditions are or-ed without a branch (the prior read at
// k = A is in bounds, and its test costs less than the bool a short circuit materialises); the
// fused seg kernels (CE) keep the short circuit: or-ed, their backward spilled at 64-72
// registers (bench --static).
template <typename acc_t, int GROUP, bool CE = false>
OCR_HD bool group_member_row(const ThreadArgs<acc_t>& T, const Merged<acc_t>& g, int row,
                             int anchor, int k, acc_t v) {
  if (GROUP == GROUP_ALL) return true;
  if (GROUP == GROUP_MAX) return k == anchor;
  const acc_t p_k = f_exp2((v - g.gmax) * (acc_t)kLog2e) * g.inv_all;
  const acc_t* m_ak = row_elem(T.prior, row + k);
  if (CE) return k == anchor || ada_member(g.p_anchor, p_k, *m_ak, T.threshold);
  return (k == anchor) | ada_member(g.p_anchor, p_k, *m_ak, T.threshold);
}

template <typename acc_t, int GROUP, bool CE = false>
OCR_HD bool group_member(const ThreadArgs<acc_t>& T, const Merged<acc_t>& g, int anchor, int k,
                         acc_t v) {
  return group_member_row<acc_t, GROUP, CE>(T, g, anchor_row<acc_t, GROUP>(T, anchor), anchor, k,
                                            v);
}

// The IC group's online (max, Σ) of −z, GROUP_ADA / GROUP_ALL (a second pass over the IC rows:
// "ada" needs P_A with the full normaliser).
template <typename acc_t, int GROUP, int PPT, typename Z, bool CE = false>
OCR_HD void ic_group_runs(const Z& z, const ThreadArgs<acc_t>& T, const Merged<acc_t>* g,
                          const Run<acc_t, true>* ic, Run<acc_t, false>* grp) {
  int row[PPT];
  // the run of −v kept as its negation, a run of the minimum of v: the same comparisons and
  // |differences|, bit for bit, without a negated copy of each logit for the maximum's select
  acc_t mn[PPT], rest[PPT];
#pragma unroll
  for (int i = 0; i < PPT; ++i) {
    row[i] = anchor_row<acc_t, GROUP>(T, ic[i].arg);
    mn[i] = -grp[i].m;
    rest[i] = grp[i].rest;
  }
#pragma unroll 1
  for (int j = 0; j < T.nic; ++j) {
    const int k = T.cls[j];
#pragma unroll
    for (int i = 0; i < PPT; ++i) {
      const acc_t v = z(k, i);
      if (group_member_row<acc_t, GROUP, CE>(T, g[i], row[i], ic[i].arg, k, v)) {
        const bool lt = v < mn[i];
        const acc_t e = f_exp2(-f_abs(v - mn[i]) * (acc_t)kLog2e);
        rest[i] = lt ? rest[i] * e + e : rest[i] + e;
        mn[i] = lt ? v : mn[i];
      }
    }
  }
#pragma unroll
  for (int i = 0; i < PPT; ++i) {
    grp[i].m = -mn[i];
    grp[i].rest = rest[i];
  }
}

// The class runs of PPT pixels, the OC classes then the IC classes (the image's class list), and
// with POISON the pixel's poison Σ v·0 (NaN where a logit is NaN or infinite, else 0). The OC
// runs keep their argmax where OC_ARG (the prediction's tie-break; the backward needs none).
template <typename acc_t, int PPT, bool POISON, typename Z, bool OC_ARG>
OCR_HD void class_runs(const Z& z, const ThreadArgs<acc_t>& T, Run<acc_t, OC_ARG>* oc,
                       Run<acc_t, true>* ic, acc_t* poison) {
  if (POISON) {
#pragma unroll
    for (int i = 0; i < PPT; ++i) poison[i] = (acc_t)0;
  }
  const int* ocl = T.cls + T.nic;
#pragma unroll 1
  for (int j = 0; j < T.noc; ++j) {
    const int k = ocl[j];
#pragma unroll
    for (int i = 0; i < PPT; ++i) {
      const acc_t v = z(k, i);
      if (POISON) poison[i] += v * (acc_t)0;
      oc[i].add(v, k);
    }
  }
#pragma unroll 1
  for (int j = 0; j < T.nic; ++j) {
    const int k = T.cls[j];
#pragma unroll
    for (int i = 0; i < PPT; ++i) {
      const acc_t v = z(k, i);
      if (POISON) poison[i] += v * (acc_t)0;
      ic[i].add(v, k);
    }
  }
}

// From the class runs: the prediction and the softmax normaliser (merge_runs; MERGE false: the
// backward of "max"/"all" without CE, which needs neither), each pixel's followed by between(i)
// (thread_backward forms its OC factors there, as it always did: formed after the group pass, or
// after every pixel's merge, its bf16 backward spilled at 64 registers), then the IC group's runs
// (a second pass over the IC classes for "ada" and "all").
template <typename acc_t, int GROUP, bool CE, int PPT, typename Z, bool OC_ARG, bool MERGE = true,
          typename Between>
OCR_HD void pixel_groups(const Z& z, const ThreadArgs<acc_t>& T, const Run<acc_t, OC_ARG>* oc,
                         const Run<acc_t, true>* ic, Merged<acc_t>* g, Run<acc_t, false>* grp,
                         const Between& between) {
#pragma unroll
  for (int i = 0; i < PPT; ++i) {
    g[i] = MERGE ? merge_runs(oc[i], ic[i]) : Merged<acc_t>{};
    between(i);
  }
  if (GROUP != GROUP_MAX) ic_group_runs<acc_t, GROUP, PPT, Z, CE>(z, T, g, ic, grp);
}

// The maps of PPT pixels from their class runs, thread_forward's last step (and the fused
// upsampling's, whose OC runs keep no argmax: OC_ARG, and thread_objective's): pixel_groups,
// the group-ranking loss plus the pixel's poison (NaN where a logit is NaN or infinite), and
// with CE the cross-entropy (0 where ignored). g, grp: pixel_groups' results, what the
// gradient's stores need (backward_stores).
template <typename acc_t, int GROUP, bool CE, int PPT, typename Z, bool OC_ARG>
OCR_HD void forward_maps(const Z& z, const ThreadArgs<acc_t>& T, const Run<acc_t, OC_ARG>* oc,
                         const Run<acc_t, true>* ic, const acc_t* poison, const int64_t* target,
                         int64_t ignore_index, acc_t* loss, acc_t* ce, Merged<acc_t>* g,
                         Run<acc_t, false>* grp) {
  pixel_groups<acc_t, GROUP, CE, PPT>(z, T, oc, ic, g, grp, [](int) {});
#pragma unroll
  for (int i = 0; i < PPT; ++i) {
    const acc_t lse_ic = GROUP == GROUP_MAX ? -ic[i].m : grp[i].lse();
    const acc_t s = lse_ic + oc[i].lse() + T.margin;
    const bool sel = pixel_selected(g[i].pred_in_ic, T.noc > 0, T.pixels);
    const acc_t sp = softplus_stable(s, f_exp2(-f_abs(s) * (acc_t)kLog2e));
    loss[i] = (sel ? sp : (acc_t)0) + poison[i];
    if (CE) {
      const int t = (int)clamp_class(target[i], T.C1);
      const acc_t c = (g[i].gmax - z(t, i)) + m_log1p(g[i].rest_all);
      ce[i] = target[i] == ignore_index ? (acc_t)0 : c;
    }
  }
}

// Forward of PPT pixels: the OCR loss of each (NaN where a logit is NaN or infinite), and with CE
// the cross-entropy against target[i] (0 where ignored). z(k, i): the logit of class k at pixel i
// (any finite value for a pixel the caller does not store).
template <typename acc_t, int GROUP, bool CE, int PPT, typename Z>
OCR_HD void thread_forward(const Z& z, const ThreadArgs<acc_t>& T, const int64_t* target,
                           int64_t ignore_index, acc_t* loss, acc_t* ce) {
  Run<acc_t, true> oc[PPT], ic[PPT];
  acc_t poison[PPT];
  class_runs<acc_t, PPT, true>(z, T, oc, ic, poison);
  Merged<acc_t> g[PPT];
  Run<acc_t, false> grp[PPT];
  forward_maps<acc_t, GROUP, CE, PPT>(z, T, oc, ic, poison, target, ignore_index, loss, ce, g, grp);
}

// The backward's per-pixel factors from the saved loss and the upstream gradients: a = grad_ocr
// where the pixel has an OCR gradient (thread_backward scales it by σ), NaN where the loss is NaN
// (so that every class of the pixel gets NaN), else 0; gce = the CE gradient (0 where ignored).
// Returns whether the pixel's logits must be read.
template <typename acc_t>
OCR_HD bool backward_factors(acc_t loss, acc_t grad_ocr, acc_t grad_ce, bool ignored, acc_t* a,
                             acc_t* gce) {
  const bool nan = loss != loss;
  *a = nan ? loss : (loss > (acc_t)0 && grad_ocr != (acc_t)0 ? grad_ocr : (acc_t)0);
  *gce = ignored ? (acc_t)0 : grad_ce;
  return !nan && (*a != (acc_t)0 || *gce != (acc_t)0);
}

// thread_backward's OC class loop: d = e^{z − m_oc}·coef − gce where k is the pixel's target
// (TGT: a target may be an OC class; without, no compare and select a logit).
template <typename acc_t, int PPT, bool TGT, typename Z, typename Store, bool OC_ARG>
OCR_HD void oc_class_stores(const Z& z, const Store& store, const ThreadArgs<acc_t>& T,
                            const Run<acc_t, OC_ARG>* oc, const acc_t* coef, const acc_t* gce,
                            const int* t) {
  const int* ocl = T.cls + T.nic;
#pragma unroll 1
  for (int j = 0; j < T.noc; ++j) {
    const int k = ocl[j];
#pragma unroll
    for (int i = 0; i < PPT; ++i) {
      const acc_t e = f_exp2((z(k, i) - oc[i].m) * (acc_t)kLog2e);
      // − gce at the target: x − g is x + (−g) bitwise, and the FFMA negates its addend for
      // free (a held −gce was rematerialised, one FADD a class and pixel)
      store(k, i, e * coef[i] - (TGT && k == t[i] ? gce[i] : (acc_t)0));
    }
  }
}

// The two uses of oc_class_stores, named apart (bench/static.py weighs each by the share of the
// rows that take it).
template <typename acc_t, int PPT, bool CE, typename Z, typename Store, bool OC_ARG>
OCR_HD void oc_stores_any_target(const Z& z, const Store& store, const ThreadArgs<acc_t>& T,
                                 const Run<acc_t, OC_ARG>* oc, const acc_t* coef, const acc_t* gce,
                                 const int* t) {
  oc_class_stores<acc_t, PPT, CE>(z, store, T, oc, coef, gce, t);
}

template <typename acc_t, int PPT, typename Z, typename Store, bool OC_ARG>
OCR_HD void oc_stores_ic_targets(const Z& z, const Store& store, const ThreadArgs<acc_t>& T,
                                 const Run<acc_t, OC_ARG>* oc, const acc_t* coef, const acc_t* gce,
                                 const int* t) {
  oc_class_stores<acc_t, PPT, false>(z, store, T, oc, coef, gce, t);
}

// The gradient's OC factors of pixel i (backward_stores' coef and t) from its OC run and
// merge_runs' result: an OC class gets d = e^{z − m_oc}·coef − gce·[k = t] with
// coef = a/Σ_oc + gce·e^{m_oc − gmax}/Σ_all, t the clamped target (−1 without CE). a: the OCR
// factor (the upstream factor times σ(s); 0 where the pixel has no OCR gradient, NaN for a NaN
// pixel: NaN at every class), gce: the CE factor (0 where ignored).
template <typename acc_t, bool CE, bool OC_ARG>
OCR_HD void oc_factor(const ThreadArgs<acc_t>& T, const Run<acc_t, OC_ARG>* oc,
                      const Merged<acc_t>* g, const acc_t* a, const acc_t* gce,
                      const int64_t* target, acc_t* coef, int* t, int i) {
  coef[i] = a[i] * oc[i].inv_sum();
  if (CE) coef[i] += gce[i] * f_exp2((oc[i].m - g[i].gmax) * (acc_t)kLog2e) * g[i].inv_all;
  t[i] = CE ? (int)clamp_class(target[i], T.C1) : -1;
}

// The gradient's stores of PPT pixels from their class runs, pixel_groups' results and
// oc_factor's: every class through store(k, i, d). a, gce: oc_factor's. SPLIT / oc_targets:
// thread_backward's.
template <typename acc_t, int GROUP, bool CE, int PPT, typename Z, typename Store, bool SPLIT,
          bool OC_ARG>
OCR_HD void backward_stores(const Z& z, const Store& store, const ThreadArgs<acc_t>& T,
                            const Run<acc_t, OC_ARG>* oc, const Run<acc_t, true>* ic,
                            const Merged<acc_t>* g, const Run<acc_t, false>* grp, const acc_t* a,
                            const acc_t* gce, const acc_t* coef, const int* t, bool oc_targets) {
  acc_t ic_scale[PPT];
#pragma unroll
  for (int i = 0; i < PPT; ++i)
    ic_scale[i] = -a[i] * (GROUP == GROUP_MAX ? (acc_t)1 : grp[i].inv_sum());
  // (template arguments spelled out: bench/static.py weighs these calls)
  if (SPLIT && CE && !oc_targets)
    oc_stores_ic_targets<acc_t, PPT, Z, Store>(z, store, T, oc, coef, gce, t);
  else
    oc_stores_any_target<acc_t, PPT, CE, Z, Store>(z, store, T, oc, coef, gce, t);
#pragma unroll 1
  for (int j = 0; j < T.nic; ++j) {
    const int k = T.cls[j];
#pragma unroll
    for (int i = 0; i < PPT; ++i) {
      const acc_t v = z(k, i);
      const acc_t gm = GROUP == GROUP_MAX ? -ic[i].m : grp[i].m;
      // a non-member gets ic_scale·0: 0, or NaN for a NaN pixel
      const acc_t e = group_member<acc_t, GROUP, CE>(T, g[i], ic[i].arg, k, v)
                          ? f_exp2((-v - gm) * (acc_t)kLog2e) : (acc_t)0;
      acc_t d = ic_scale[i] * e;
      if (CE)
        d += gce[i] * (f_exp2((v - g[i].gmax) * (acc_t)kLog2e) * g[i].inv_all) -
             (k == t[i] ? gce[i] : (acc_t)0);
      store(k, i, d);
    }
  }
}

// Backward of PPT pixels: recomputes the runs, then writes every class through store(k, i, d).
// loss: the forward's; a_in, gce from backward_factors; a pixel whose factors are 0 gets zeros
// (its z may be any finite value: the caller does not read it), a NaN factor NaN everywhere.
// SPLIT: the caller passes oc_targets = whether any pixel of the group calling together (a
// block, barriers in `store`) has a non-ignored target among the OC classes; where none has,
// the OC loop skips the target's compare (the usual case: pseudo-labels keep to the tags).
template <typename acc_t, int GROUP, bool CE, int PPT, typename Z, typename Store,
          bool SPLIT = false>
OCR_HD void thread_backward(const Z& z, const Store& store, const ThreadArgs<acc_t>& T,
                            const acc_t* loss, const acc_t* a_in, const acc_t* gce,
                            const int64_t* target, bool oc_targets = true) {
  // σ(s) = 1 − e^{−L} from the saved loss (0 at L = 0; a_in is 0 there anyway)
  acc_t a[PPT];
#pragma unroll
  for (int i = 0; i < PPT; ++i) a[i] = a_in[i] * sigma_from_loss(loss[i]);
  Run<acc_t, false> oc[PPT];
  Run<acc_t, true> ic[PPT];
  class_runs<acc_t, PPT, false>(z, T, oc, ic, (acc_t*)nullptr);
  Merged<acc_t> g[PPT];
  Run<acc_t, false> grp[PPT];
  acc_t coef[PPT];
  int t[PPT];
  pixel_groups<acc_t, GROUP, CE, PPT, Z, false, CE || GROUP == GROUP_ADA>(
      z, T, oc, ic, g, grp, [&](int i) { oc_factor<acc_t, CE>(T, oc, g, a, gce, target, coef, t, i); });
  backward_stores<acc_t, GROUP, CE, PPT, Z, Store, SPLIT>(z, store, T, oc, ic, g, grp, a, gce,
                                                          coef, t, oc_targets);
}

// The seg objective's forward and gradient of PPT pixels from one read of their logits: loss[i]
// and ce[i] as thread_forward<CE = true> computes them (bitwise), and through store(k, i, d)
// every class's gradient of a_in[i]·loss_i + gce[i]·ce_i as thread_backward<CE = true> writes it
// given that loss and the factors (σ(s) from the loss; a NaN loss: NaN at every class). a_in:
// the pixel's OCR upstream factor; gce: its CE factor, 0 where the target is ignored (the
// caller's). SPLIT / oc_targets: thread_backward's.
template <typename acc_t, int GROUP, int PPT, typename Z, typename Store, bool SPLIT = false>
OCR_HD void thread_objective(const Z& z, const Store& store, const ThreadArgs<acc_t>& T,
                             const int64_t* target, int64_t ignore_index, const acc_t* a_in,
                             const acc_t* gce, acc_t* loss, acc_t* ce, bool oc_targets = true) {
  Run<acc_t, true> oc[PPT], ic[PPT];
  acc_t poison[PPT];
  class_runs<acc_t, PPT, true>(z, T, oc, ic, poison);
  Merged<acc_t> g[PPT];
  Run<acc_t, false> grp[PPT];
  forward_maps<acc_t, GROUP, true, PPT>(z, T, oc, ic, poison, target, ignore_index, loss, ce, g,
                                        grp);
  acc_t a[PPT];
#pragma unroll
  for (int i = 0; i < PPT; ++i) {
    acc_t unused;
    backward_factors(loss[i], a_in[i], (acc_t)0, true, &a[i], &unused);
    a[i] *= sigma_from_loss(loss[i]);
  }
  acc_t coef[PPT];
  int t[PPT];
#pragma unroll
  for (int i = 0; i < PPT; ++i) oc_factor<acc_t, true>(T, oc, g, a, gce, target, coef, t, i);
  backward_stores<acc_t, GROUP, true, PPT, Z, Store, SPLIT>(z, store, T, oc, ic, g, grp, a, gce,
                                                            coef, t, oc_targets);
}

// objective_kernel's per-pixel inputs of thread_objective, formed alike by the CPU hook: the CE
// factor coef_ce·w (w: the pixel's ce_weight, null without one; read only where not ignored), 0
// where the target t is ignored. Returns whether t is a non-ignored OC class of the image (ic:
// its row of the IC mask, [C1]): a warp none of whose pixels has one skips the OC loop's compare
// of each class with the targets (SPLIT).
template <typename acc_t>
OCR_HD bool objective_pixel(int64_t t, int64_t ignore_index, acc_t coef_ce, const acc_t* w,
                            const uint8_t* ic, int C1, acc_t* gce) {
  const bool ignored = t == ignore_index;
  *gce = ignored ? (acc_t)0 : (w != nullptr ? coef_ce * *w : coef_ce);
  return !ignored && ic[clamp_class(t, C1)] == 0;
}

// ---- the forward's loss mask --------------------------------------------------------------------
// ocr_loss_map's second output: a bit a pixel, set where the loss is not 0 (NaN included), bit
// q % 32 of word q / 32 of the image's row of mask_words(N) int32 words; the bits past N are 0.
// The backward reads it in full (N / 8 bytes an image) and the loss map and its upstream gradient
// only where a bit is set: with 10 % of the pixels OC in blobs, ~16 % of their sectors instead
// of every sector of the loss map (4 bytes a pixel).
OCR_HD int64_t mask_words(int64_t N) { return (N + 31) >> 5; }

OCR_HD bool mask_bit(const uint32_t* row, int64_t q) { return (row[q >> 5] >> (q & 31)) & 1u; }

// A run of n ballots, ballot u holding pixels s + 32u .. s + 32u + 31 where o = s % 32 > 0 (the
// unit-stride path's last tile of an image, which ends at its last pixel): aligned word t of the
// run, the one whose first pixel is s − o + 32(t + 1); the bits past the run are 0.
OCR_HD uint32_t mask_word_shifted(const uint32_t* ballots, int n, int t, int o) {
  const uint32_t hi = t + 1 < n ? ballots[t + 1] : 0u;
  return (ballots[t] >> (32 - o)) | (hi << o);
}

// ---- the backward's warp compaction ------------------------------------------------------------
// A warp whose k pixels with a gradient fit in kCompactRounds rounds of 32 works on those only:
// each gets a slot (its rank among them, pixel i of lane l ranked after the pixels of ballots
// 0..i−1 and the lanes below l of ballot i), the warp runs ceil(k / 32) rounds of one pixel a lane
// over the slots and writes zeros for its other pixels, so its recompute costs what its gradient
// pixels need, not what its 32·PPT pixels would. A fuller warp (the seg objective's, whose CE
// gradient is everywhere) runs thread_backward on its PPT pixels a lane: a round of PPT pixels
// costs about what two rounds of one pixel do (bench --static).
constexpr int kCompactRounds = 2;

OCR_HD bool warp_compacts(int k) { return k <= 32 * kCompactRounds; }

OCR_HD int popcount32(unsigned x) {
#ifdef __CUDA_ARCH__
  return __popc(x);
#else
  return __builtin_popcount(x);
#endif
}

// What the backward needs of one pixel. active: its logits get a gradient that is not 0 (or NaN).
template <typename acc_t>
struct PixelGrad {
  acc_t loss, a, gce;
  int64_t t;
  bool active;
};

// loss(), g_ocr(), target(), g_ce(): the pixel's saved loss and upstream values, read only where
// they matter: the OCR upstream gradient where the loss is > 0, the CE one where the target is
// not ignored.
template <typename acc_t, bool CE, typename Loss, typename GOcr, typename Target, typename GCe>
OCR_HD PixelGrad<acc_t> pixel_grad(const Loss& loss, const GOcr& g_ocr, const Target& target,
                                   const GCe& g_ce, int64_t ignore_index) {
  PixelGrad<acc_t> r;
  r.loss = loss();
  const acc_t go = r.loss > (acc_t)0 ? g_ocr() : (acc_t)0;
  r.t = CE ? target() : 0;
  const bool ignored = !CE || r.t == ignore_index;
  const acc_t gc = ignored ? (acc_t)0 : g_ce();
  r.active = backward_factors(r.loss, go, gc, ignored, &r.a, &r.gce) || r.loss != r.loss;
  return r;
}

// The slot of pixel i of `lane` among the active pixels of the warp's ballots m[0..PPT).
template <int PPT>
OCR_HD int warp_slot(const unsigned* m, int i, int lane) {
#ifdef __CUDA_ARCH__
  unsigned below;  // the lanes below this one (a special register, not a value to keep live)
  asm volatile("mov.u32 %0, %%lanemask_lt;" : "=r"(below));
#else
  const unsigned below = (1u << lane) - 1u;
#endif
  int s = popcount32(m[i] & below);
  for (int j = 0; j < i; ++j) s += popcount32(m[j]);
  return s;
}

template <int PPT>
OCR_HD int warp_active(const unsigned* m) {
  int k = 0;
#pragma unroll
  for (int i = 0; i < PPT; ++i) k += popcount32(m[i]);
  return k;
}

// The zeros of a warp's inactive pixels (`active[i]` false), in the warp's layout.
template <typename acc_t, int PPT, typename Store>
OCR_HD void thread_backward_zeros(const Store& store, const bool* active, int C1) {
#pragma unroll 1
  for (int k = 0; k < C1; ++k) {
#pragma unroll
    for (int i = 0; i < PPT; ++i)
      if (!active[i]) store(k, i, (acc_t)0);
  }
}

// Lane `lane`'s pixel in compacted round r of a warp whose first pixel is w0 (nothing when the
// round holds fewer pixels): read(q) its PixelGrad, z_at(q, c) a logit, store_at(q, c, d).
template <typename acc_t, int GROUP, bool CE, typename Read, typename ZAt, typename StoreAt>
OCR_HD void compacted_round(const ThreadArgs<acc_t>& T, const uint8_t* slots, int k, int r,
                            int lane, int64_t w0, const Read& read, const ZAt& z_at,
                            const StoreAt& store_at) {
  const int s = r * 32 + lane;
  if (s >= k) return;
  const int64_t q = w0 + slots[s];
  const PixelGrad<acc_t> Q = read(q);
  auto zf = [&](int c, int) { return z_at(q, c); };
  auto store = [&](int c, int, acc_t d) { store_at(q, c, d); };
  thread_backward<acc_t, GROUP, CE, 1>(zf, store, T, &Q.loss, &Q.a, &Q.gce, &Q.t);
}

}  // namespace ocr
