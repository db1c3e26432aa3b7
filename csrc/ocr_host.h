// Host-side helpers shared by the CPU and CUDA bindings of the OCR ops: argument checks, layout
// collapsing (walk the spatial dims as one strided run, so NCHW and channels_last need no copy),
// the small per-call tensors (in-candidate mask, prior in the math dtype), the preparation of a
// call's tensors, and the four registered entry points over a backend's forward and backward.
#pragma once

#include <ATen/ATen.h>
#include <torch/library.h>

#include <tuple>

#include "common_host.h"
#include "ocr_pixel.h"
#include "ocr_thread.h"

namespace ocr {

// Dims [first, dim) of t as one run of N elements `stride` apart, when the strides allow it
// (size-1 dims are skipped; stride-0 expanded maps collapse too).
inline bool collapse_dims(const at::Tensor& t, int64_t first, int64_t* N, int64_t* stride) {
  int64_t n = 1, s = 1, expect = 0;
  bool have = false;
  for (int64_t d = t.dim() - 1; d >= first; --d) {
    const int64_t sz = t.size(d);
    n *= sz;
    if (sz == 1) continue;
    if (!have) {
      s = t.stride(d);
      have = true;
    } else if (t.stride(d) != expect) {
      return false;
    }
    expect = t.stride(d) * sz;
  }
  *N = n;
  *stride = s;
  return true;
}

inline Layout3 layout3(const at::Tensor& t) {
  Layout3 l;
  l.B = t.size(0);
  l.C1 = t.size(1);
  l.sB = t.stride(0);
  l.sC = t.stride(1);
  bool ok = collapse_dims(t, 2, &l.N, &l.sN);
  TORCH_INTERNAL_ASSERT(ok, "layout3 on a tensor whose spatial dims do not collapse");
  return l;
}

inline Layout2 layout2(const at::Tensor& t) {
  Layout2 l;
  int64_t n;
  l.sB = t.stride(0);
  bool ok = collapse_dims(t, 1, &n, &l.sN);
  TORCH_INTERNAL_ASSERT(ok, "layout2 on a tensor whose spatial dims do not collapse");
  return l;
}

// The logits as the kernels read them: as they are when the spatial dims collapse (contiguous,
// channels_last, channels_last_3d, batch/channel slices), else a contiguous copy (exotic layouts
// only).
inline at::Tensor logits_for_kernel(const at::Tensor& logits) {
  int64_t n, s;
  return collapse_dims(logits, 2, &n, &s) ? logits : logits.contiguous();
}

// A map [B, *spatial] in the math dtype with collapsible spatial dims (no copy in the usual case,
// including stride-0 expanded gradients of "mean"/"sum").
inline at::Tensor map_for_kernel(const at::Tensor& m, at::ScalarType dtype) {
  at::Tensor t = m.scalar_type() == dtype ? m : m.to(dtype);
  int64_t n, s;
  return collapse_dims(t, 1, &n, &s) ? t : t.contiguous();
}

// Gradient buffer with the logits' layout where that layout is walkable, else contiguous.
inline at::Tensor grad_like(const at::Tensor& logits) {
  at::Tensor g = at::empty_like(logits);
  int64_t n, s;
  return collapse_dims(g, 2, &n, &s) ? g : at::empty(logits.sizes(), logits.options());
}

using ocr_kernels::math_dtype;

// uint8 [B, C1]: 1 for the in-candidate classes (background and the tagged ones).
inline at::Tensor ic_mask(const at::Tensor& tags) {
  at::Tensor present = tags.ne(0).to(at::kByte);
  return at::cat({at::ones({tags.size(0), 1}, present.options()), present}, 1).contiguous();
}

inline at::Tensor prior_for_kernel(const c10::optional<at::Tensor>& prior, int64_t group,
                                   at::ScalarType dtype, const at::Tensor& logits) {
  if (group != GROUP_ADA) return at::empty({0}, logits.options().dtype(dtype));
  TORCH_CHECK(prior.has_value() && prior->defined(), "ocr_kernels: group_split=ada needs a prior");
  const int64_t C1 = logits.size(1);
  TORCH_CHECK(prior->dim() == 2 && prior->size(0) == C1 && prior->size(1) == C1,
              "ocr_kernels: prior must be [", C1, ", ", C1, "]; got ", prior->sizes());
  TORCH_CHECK(prior->device() == logits.device(), "ocr_kernels: prior must be on ", logits.device());
  return prior->to(dtype).contiguous();
}

inline void check_common(const at::Tensor& logits, const at::Tensor& tags, int64_t group,
                         int64_t pixels) {
  TORCH_CHECK(logits.dim() >= 3 && logits.dim() <= 5 && logits.size(1) >= 2,
              "ocr_kernels: logits must be [B, C+1, *spatial] with 1-3 spatial dims and C+1 >= 2; got ",
              logits.sizes());
  TORCH_CHECK(logits.scalar_type() == at::kFloat || logits.scalar_type() == at::kDouble ||
                  logits.scalar_type() == at::kHalf || logits.scalar_type() == at::kBFloat16,
              "ocr_kernels: logits must be float16/bfloat16/float32/float64; got ",
              logits.scalar_type());
  TORCH_CHECK(tags.dim() == 2 && tags.size(0) == logits.size(0) &&
                  tags.size(1) == logits.size(1) - 1,
              "ocr_kernels: tags must be [B, C] = [", logits.size(0), ", ", logits.size(1) - 1,
              "]; got ", tags.sizes());
  TORCH_CHECK(tags.device() == logits.device(), "ocr_kernels: tags must be on ", logits.device());
  TORCH_CHECK(group >= 0 && group <= 2, "ocr_kernels: bad group_split code ", group);
  TORCH_CHECK(pixels >= 0 && pixels <= 2, "ocr_kernels: bad pixels code ", pixels);
}

inline void check_map(const char* name, const at::Tensor& m, const at::Tensor& logits) {
  std::vector<int64_t> want{logits.size(0)};
  for (int64_t d = 2; d < logits.dim(); ++d) want.push_back(logits.size(d));
  TORCH_CHECK(m.sizes() == at::IntArrayRef(want), "ocr_kernels: ", name, " must be ",
              at::IntArrayRef(want), "; got ", m.sizes());
  TORCH_CHECK(m.device() == logits.device(), "ocr_kernels: ", name, " must be on ", logits.device());
}

inline at::Tensor target_for_kernel(const at::Tensor& target, const at::Tensor& logits) {
  check_map("target", target, logits);
  TORCH_CHECK(!at::isFloatingType(target.scalar_type()) && target.scalar_type() != at::kBool,
              "ocr_kernels: target must be an integer tensor; got ", target.scalar_type());
  at::Tensor t = target.scalar_type() == at::kLong ? target : target.to(at::kLong);
  int64_t n, s;
  return collapse_dims(t, 1, &n, &s) ? t : t.contiguous();
}

// The output map [B, *spatial] (contiguous, math dtype).
inline at::Tensor new_map(const at::Tensor& logits) {
  std::vector<int64_t> shape{logits.size(0)};
  for (int64_t d = 2; d < logits.dim(); ++d) shape.push_back(logits.size(d));
  return at::empty(shape, logits.options().dtype(math_dtype(logits.scalar_type())));
}

// The tensors every forward and backward call prepares, checked, as the kernels read them.
struct Prepared {
  at::Tensor z;       // the logits (no copy for collapsible layouts)
  at::ScalarType acc;  // math dtype
  at::Tensor ic;      // uint8 [B, C1] in-candidate mask
  at::Tensor prior;   // [C1, C1] in the math dtype ("ada"), else empty
  at::Tensor target;  // int64 [B, *spatial]; undefined without the cross-entropy term
  bool ce() const { return target.defined(); }
};

inline Prepared prepare(const at::Tensor& logits, const c10::optional<at::Tensor>& target,
                        const at::Tensor& tags, const c10::optional<at::Tensor>& prior,
                        int64_t group, int64_t pixels) {
  check_common(logits, tags, group, pixels);
  Prepared p;
  p.z = logits_for_kernel(logits);
  p.acc = math_dtype(p.z.scalar_type());
  p.ic = ic_mask(tags);
  p.prior = prior_for_kernel(prior, group, p.acc, p.z);
  if (target.has_value()) p.target = target_for_kernel(*target, p.z);
  return p;
}

// An upstream gradient or saved map [B, *spatial], checked, in the math dtype.
inline at::Tensor map_arg(const char* name, const at::Tensor& m, const Prepared& p) {
  check_map(name, m, p.z);
  return map_for_kernel(m, p.acc);
}

// grad_ce as the kernels read it (undefined without the cross-entropy term).
inline at::Tensor grad_ce_arg(const c10::optional<at::Tensor>& grad_ce, const Prepared& p) {
  if (!p.ce()) return at::Tensor();
  TORCH_CHECK(grad_ce.has_value(), "ocr_kernels: grad_ce is required with a target");
  return map_arg("grad_ce", *grad_ce, p);
}

// seg_ocr_objective's coef: [coef_ce, coef_ocr] in the math dtype on the logits' device (a
// tensor: the kernel reads it, the host never does), contiguous.
inline at::Tensor coef_arg(const at::Tensor& coef, const Prepared& p) {
  TORCH_CHECK(coef.dim() == 1 && coef.size(0) == 2 && coef.scalar_type() == p.acc,
              "ocr_kernels: coef must be a 1-D ", p.acc, " tensor of 2 values; got ",
              coef.scalar_type(), " ", coef.sizes());
  TORCH_CHECK(coef.device() == p.z.device(), "ocr_kernels: coef must be on ", p.z.device());
  return coef.contiguous();
}

// seg_ocr_objective's ce_weight as the kernels read it: undefined without one, else [B, *spatial]
// in the math dtype (any collapsible strides).
inline at::Tensor ce_weight_arg(const c10::optional<at::Tensor>& w, const Prepared& p) {
  if (!w.has_value() || !w->defined()) return at::Tensor();
  TORCH_CHECK(w->scalar_type() == p.acc, "ocr_kernels: ce_weight must be ", p.acc, "; got ",
              w->scalar_type());
  return map_arg("ce_weight", *w, p);
}

// scale_grad_'s g: one value in the gradient's math dtype on its device.
inline void check_scale_grad(const at::Tensor& grad, const at::Tensor& g) {
  TORCH_CHECK(at::isFloatingType(grad.scalar_type()), "ocr_kernels: scale_grad_: grad must be floating point; got ", grad.scalar_type());
  TORCH_CHECK(g.numel() == 1 && g.scalar_type() == math_dtype(grad.scalar_type()),
              "ocr_kernels: scale_grad_: g must hold one ", math_dtype(grad.scalar_type()),
              " value; got ", g.scalar_type(), " ", g.sizes());
  TORCH_CHECK(g.device() == grad.device(), "ocr_kernels: scale_grad_: g must be on ", grad.device());
}

// ocr_loss_map's mask (ocr_thread.h: a bit a pixel, loss != 0): int32 [B, (N + 31) / 32].
inline at::Tensor new_mask(const at::Tensor& z) {
  int64_t N = 1;
  for (int64_t d = 2; d < z.dim(); ++d) N *= z.size(d);
  return at::empty({z.size(0), mask_words(N)}, z.options().dtype(at::kInt));
}

// The mask as the backward reads it: checked against the logits, contiguous (no copy for the
// forward's own output).
inline at::Tensor mask_arg(const at::Tensor& m, const Prepared& p) {
  int64_t N = 1;
  for (int64_t d = 2; d < p.z.dim(); ++d) N *= p.z.size(d);
  const int64_t B = p.z.size(0), W = mask_words(N);
  TORCH_CHECK(m.scalar_type() == at::kInt && m.dim() == 2 && m.size(0) == B && m.size(1) == W,
              "ocr_kernels: mask must be the forward's int32 [", B, ", ", W, "]; got ",
              m.scalar_type(), " ", m.sizes());
  TORCH_CHECK(m.device() == p.z.device(), "ocr_kernels: mask must be on ", p.z.device());
  return m.contiguous();
}

// The four ops of csrc/ops.cpp over one backend's
//   forward(logits, target?, tags, prior?, margin, threshold, group, pixels, ignore_index)
//     -> (ocr_map, ce_map, mask), mask (new_mask) without a target only
//   backward(grad_ocr, grad_ce?, logits, target?, tags, prior?, ocr_map, mask?, threshold, group,
//            pixels, ignore_index) -> grad, mask (mask_arg) without a target only
template <auto Forward, auto Backward>
struct Ops {
  using OptT = c10::optional<at::Tensor>;

  static std::tuple<at::Tensor, at::Tensor> loss_map(const at::Tensor& logits,
                                                     const at::Tensor& tags, const OptT& prior,
                                                     double margin, double threshold,
                                                     int64_t group, int64_t pixels) {
    auto out = Forward(logits, c10::nullopt, tags, prior, margin, threshold, group, pixels, 0);
    return {std::get<0>(out), std::get<2>(out)};
  }
  static at::Tensor loss_map_backward(const at::Tensor& grad_map, const at::Tensor& logits,
                                      const at::Tensor& tags, const OptT& prior,
                                      const at::Tensor& loss_map, const at::Tensor& mask,
                                      double margin, double threshold, int64_t group,
                                      int64_t pixels) {
    return Backward(grad_map, c10::nullopt, logits, c10::nullopt, tags, prior, loss_map, mask,
                    threshold, group, pixels, 0);
  }
  static std::tuple<at::Tensor, at::Tensor> seg_maps(const at::Tensor& logits,
                                                     const at::Tensor& target,
                                                     const at::Tensor& tags, const OptT& prior,
                                                     double margin, double threshold,
                                                     int64_t group, int64_t pixels,
                                                     int64_t ignore_index) {
    auto out = Forward(logits, target, tags, prior, margin, threshold, group, pixels, ignore_index);
    return {std::get<1>(out), std::get<0>(out)};
  }
  static at::Tensor seg_maps_backward(const at::Tensor& grad_ce, const at::Tensor& grad_ocr,
                                      const at::Tensor& logits, const at::Tensor& target,
                                      const at::Tensor& tags, const OptT& prior,
                                      const at::Tensor& ocr_map, double margin, double threshold,
                                      int64_t group, int64_t pixels, int64_t ignore_index) {
    return Backward(grad_ocr, grad_ce, logits, target, tags, prior, ocr_map, at::Tensor(),
                    threshold, group, pixels, ignore_index);
  }
  static void register_impls(torch::Library& m) {
    m.impl("ocr_loss_map", &loss_map);
    m.impl("ocr_loss_map_backward", &loss_map_backward);
    m.impl("seg_ocr_loss_maps", &seg_maps);
    m.impl("seg_ocr_loss_maps_backward", &seg_maps_backward);
  }
};

}  // namespace ocr
