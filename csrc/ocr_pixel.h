// Per-pixel OCR math (docs/semantics.md §1), shared by the CPU and CUDA kernels.
//
// Plain C++ with no torch or CUDA-library includes, so that it compiles in host code, in nvcc
// device code, and in the CUDA translation units that must not see torch headers
// (docs/kernel-notes.md). `pixel_forward`/`pixel_backward` compute one pixel from any logit
// accessor (the fused-upsampling kernels read interpolated logits through them); the CPU tiles
// and the CUDA OCR kernels' per-thread code (ocr_thread.h) use the same element functions
// (softplus_stable, sigma_from_loss, ada_member, pixel_selected) so the decisions match.
#pragma once

#include <math.h>
#include <stdint.h>

#include "common.h"

#if defined(__CUDACC__) || defined(__HIPCC__)
#define OCR_HD __host__ __device__ __forceinline__
#else
#define OCR_HD inline
#endif

namespace ocr {

// Option codes: keep in step with ocr_kernels/_options.py.
enum GroupSplit : int { GROUP_ADA = 0, GROUP_MAX = 1, GROUP_ALL = 2 };
enum PixelMode : int { PIXELS_OC = 0, PIXELS_IC = 1, PIXELS_ALL = 2 };

// [B, C1, *spatial] (logits, gradients) walked as (b, k, p).
struct Layout3 {
  int64_t B, C1, N, sB, sC, sN;
};

// [B, *spatial] maps walked as (b, p).
struct Layout2 {
  int64_t sB, sN;
};

OCR_HD float m_exp(float x) { return expf(x); }
OCR_HD double m_exp(double x) { return exp(x); }
OCR_HD float m_log(float x) { return logf(x); }
OCR_HD double m_log(double x) { return log(x); }
OCR_HD float m_log1p(float x) { return log1pf(x); }
OCR_HD double m_log1p(double x) { return log1p(x); }
OCR_HD float m_expm1(float x) { return expm1f(x); }
OCR_HD double m_expm1(double x) { return expm1(x); }

template <typename acc_t>
OCR_HD acc_t neg_inf() { return -(acc_t)INFINITY; }

// log(1 + e^s) without overflow, smooth everywhere (the reference's logaddexp(s, 0)).
template <typename acc_t>
OCR_HD acc_t softplus_stable(acc_t s, acc_t e_neg_abs_s /* = exp(-|s|) */) {
  return (s > (acc_t)0 ? s : (acc_t)0) + m_log1p(e_neg_abs_s);
}

// σ(s) recovered from the saved loss L = softplus(s): σ(s) = 1 − e^{−L}. The backward uses this
// instead of recomputing s, so the forward need only keep L.
template <typename acc_t>
OCR_HD acc_t sigma_from_loss(acc_t L) { return -m_expm1(-L); }

// Eq. 9: k ∈ IC joins the anchor's group when P_A − P_k·M[A, k] < t.
template <typename acc_t>
OCR_HD bool ada_member(acc_t p_anchor, acc_t p_k, acc_t m_ak, acc_t threshold) {
  return p_anchor - p_k * m_ak < threshold;
}

// The pixel mask m (Eq. 5 and the Tab. 4b ablation); no OC class at all means no loss.
OCR_HD bool pixel_selected(bool pred_in_ic, bool has_oc, int pixels) {
  bool m = pixels == PIXELS_OC ? !pred_in_ic : (pixels == PIXELS_IC ? pred_in_ic : true);
  return m && has_oc;
}

// Running (max, Σ exp(v − max)) with one exponential per value. rest = s − 1 is summed on its own
// (the terms other than the first maximum): log(s) = log1p(rest) stays accurate to a few ulp of
// itself when s is within an ulp or so of 1, which s itself cannot resolve.
template <typename acc_t>
struct OnlineLSE {
  acc_t m, s, rest;
  OCR_HD OnlineLSE() : m(neg_inf<acc_t>()), s((acc_t)0), rest((acc_t)0) {}
  OCR_HD void add(acc_t v) {
    if (v > m) {
      const acc_t e = m_exp(m - v);
      s = s * e + (acc_t)1;
      rest = (rest + (acc_t)1) * e;
      m = v;
    } else {
      const acc_t e = m_exp(v - m);
      s += e;
      rest += e;
    }
  }
  OCR_HD acc_t log_sum() const { return m_log1p(rest); }
  OCR_HD acc_t value() const { return m + m_log(s); }
};

// Everything the loss and its gradient need about one pixel.
template <typename acc_t>
struct PixelStats {
  int pred, anchor;
  acc_t gmax, inv_sum, p_anchor;  // softmax over all classes: P_k = exp(z_k − gmax)·inv_sum
  // logsumexp(z) = gmax + log_sum_all, kept apart: the cross-entropy (gmax − z_t) + log_sum_all
  // and the softmax must not round through one absolute number ~|z| (2^-24·|z| of error swamps a
  // small loss or 1 − softmax_t).
  acc_t log_sum_all;
  acc_t lse_ic, lse_oc;           // LSE_{G_ic}(−z), LSE_{OC}(z): only summed into s
  // The same two as (max, 1/Σ) for the gradient's softmaxes e^{±z − max}/Σ: e^{±z − lse} would
  // carry the rounding of lse (~|z|·2^-24) into every gradient element.
  acc_t ic_max, ic_inv_sum, oc_max, oc_inv_sum;
  acc_t poison;  // 0, or NaN when a logit of the pixel is NaN or infinite (the loss is NaN then)
  bool has_oc, selected;
};

// Z(k) -> acc_t: logit of class k at this pixel; ic: uint8 [C1], 1 for in-candidate classes;
// prior: [C1, C1] row-major (read only for GROUP_ADA).
template <typename acc_t, typename Z>
OCR_HD bool in_group(const PixelStats<acc_t>& st, const Z& z, const uint8_t* ic,
                     const acc_t* prior, int64_t C1, int64_t k, acc_t threshold, int group) {
  if (!ic[k]) return false;
  if (k == st.anchor || group == GROUP_ALL) return true;
  if (group == GROUP_MAX) return false;
  acc_t p_k = m_exp(z(k) - st.gmax) * st.inv_sum;
  return ada_member(st.p_anchor, p_k, prior[(int64_t)st.anchor * C1 + k], threshold);
}

template <typename acc_t, typename Z>
OCR_HD PixelStats<acc_t> pixel_stats(const Z& z, const uint8_t* ic, const acc_t* prior,
                                     int64_t C1, acc_t threshold, int group, int pixels) {
  PixelStats<acc_t> st;
  st.pred = 0;
  st.anchor = 0;
  acc_t amax = neg_inf<acc_t>();
  OnlineLSE<acc_t> all, oc, ic_all;
  st.gmax = neg_inf<acc_t>();
  st.poison = (acc_t)0;
  for (int64_t k = 0; k < C1; ++k) {
    acc_t v = z(k);
    st.poison += v * (acc_t)0;
    if (v > st.gmax) { st.gmax = v; st.pred = (int)k; }  // strict: ties keep the lowest index
    all.add(v);
    if (ic[k]) {
      if (v > amax) { amax = v; st.anchor = (int)k; }
      if (group == GROUP_ALL) ic_all.add(-v);
    } else {
      oc.add(v);
    }
  }
  st.gmax = all.m;
  st.inv_sum = (acc_t)1 / all.s;
  st.log_sum_all = all.log_sum();
  st.p_anchor = m_exp(amax - st.gmax) * st.inv_sum;
  st.has_oc = oc.s > (acc_t)0;
  st.lse_oc = st.has_oc ? oc.value() : (acc_t)0;
  st.oc_max = oc.m;
  st.oc_inv_sum = (acc_t)1 / oc.s;
  if (group == GROUP_MAX) {
    st.lse_ic = -amax;
    st.ic_max = -amax;
    st.ic_inv_sum = (acc_t)1;
  } else if (group == GROUP_ALL) {
    st.lse_ic = ic_all.value();
    st.ic_max = ic_all.m;
    st.ic_inv_sum = (acc_t)1 / ic_all.s;
  } else {
    OnlineLSE<acc_t> g;
    for (int64_t k = 0; k < C1; ++k)
      if (in_group(st, z, ic, prior, C1, k, threshold, group)) g.add(-z(k));
    st.lse_ic = g.value();
    st.ic_max = g.m;
    st.ic_inv_sum = (acc_t)1 / g.s;
  }
  st.selected = pixel_selected(ic[st.pred] != 0, st.has_oc, pixels);
  return st;
}

template <typename acc_t>
OCR_HD acc_t loss_from_stats(const PixelStats<acc_t>& st, acc_t margin) {
  if (!st.selected) return st.poison;
  acc_t s = st.lse_ic + st.lse_oc + margin;
  return softplus_stable(s, m_exp(s > (acc_t)0 ? -s : s)) + st.poison;
}

// Cross-entropy of one pixel: logsumexp(z) − z[t]; 0 where t == ignore_index. A target outside
// [0, C1) is clamped for the read (the caller validates targets; this only keeps reads in bounds).
OCR_HD int64_t clamp_class(int64_t t, int64_t C1) { return t < 0 ? 0 : (t >= C1 ? C1 - 1 : t); }

// Forward of one pixel: returns the OCR loss; writes the cross-entropy through ce when non-null.
template <typename acc_t, typename Z>
OCR_HD acc_t pixel_forward(const Z& z, const uint8_t* ic, const acc_t* prior, int64_t C1,
                           acc_t margin, acc_t threshold, int group, int pixels,
                           bool with_ce, int64_t target, int64_t ignore_index, acc_t* ce) {
  PixelStats<acc_t> st = pixel_stats<acc_t>(z, ic, prior, C1, threshold, group, pixels);
  if (with_ce)
    *ce = target == ignore_index ? (acc_t)0
                                 : (st.gmax - z(clamp_class(target, C1))) + st.log_sum_all;
  return loss_from_stats(st, margin);
}

// Backward of one pixel. a = grad_ocr·σ(s) (from the saved loss), gce = grad_ce (0 when the
// pixel is ignored or there is no CE term). Writes every class through store(k, value): zeros
// where neither term has a gradient, without reading the logits.
template <typename acc_t, typename Z, typename Store>
OCR_HD void pixel_backward(const Z& z, const Store& store, const uint8_t* ic, const acc_t* prior,
                           int64_t C1, acc_t threshold, int group, int pixels, acc_t loss,
                           acc_t grad_ocr, acc_t gce, int64_t target) {
  if (loss != loss) {  // a non-finite logit: NaN for every class of the pixel
    for (int64_t k = 0; k < C1; ++k) store(k, (acc_t)NAN);
    return;
  }
  const bool ocr_active = loss > (acc_t)0 && grad_ocr != (acc_t)0;
  if (!ocr_active && gce == (acc_t)0) {
    for (int64_t k = 0; k < C1; ++k) store(k, (acc_t)0);
    return;
  }
  PixelStats<acc_t> st = pixel_stats<acc_t>(z, ic, prior, C1, threshold, group, pixels);
  const acc_t a = ocr_active ? grad_ocr * sigma_from_loss(loss) : (acc_t)0;
  const int64_t t = clamp_class(target, C1);
  for (int64_t k = 0; k < C1; ++k) {
    acc_t v = z(k);
    acc_t d = (acc_t)0;
    if (a != (acc_t)0) {
      if (!ic[k])
        d = a * (m_exp(v - st.oc_max) * st.oc_inv_sum);
      else if (in_group(st, z, ic, prior, C1, k, threshold, group))
        d = -a * (m_exp(-v - st.ic_max) * st.ic_inv_sum);
    }
    if (gce != (acc_t)0)
      d += gce * (m_exp(v - st.gmax) * st.inv_sum - (k == t ? (acc_t)1 : (acc_t)0));
    store(k, d);
  }
}

}  // namespace ocr
