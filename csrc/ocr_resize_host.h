// Host-side helpers of the fused-upsampling ops shared by the CPU kernel (csrc/cpu/ocr_resize.cpp),
// the CUDA binding (csrc/cuda/ocr_resize_binding.cpp) and the CPU test hook: argument checks, the
// full-resolution map arguments, and the untyped call (ResizeArgs) the per-thread functions of
// ocr_resize_pixel.h read.
#pragma once

#include <ATen/ATen.h>
#include <torch/library.h>

#include <tuple>

#include "ocr_host.h"
#include "ocr_resize_pixel.h"

namespace ocr {

struct ResizedChecked {
  at::Tensor ic, prior, target;
  int64_t H, W;
};

inline ResizedChecked check_resized(const at::Tensor& logits,
                                    const c10::optional<at::Tensor>& target,
                                    const at::Tensor& tags, const c10::optional<at::Tensor>& prior,
                                    at::IntArrayRef size, int64_t group, int64_t pixels) {
  check_common(logits, tags, group, pixels);
  TORCH_CHECK(logits.dim() == 4, "ocr_kernels: fused upsampling needs logits [B, C+1, h, w]; got ",
              logits.sizes());
  TORCH_CHECK(size.size() == 2 && size[0] > 0 && size[1] > 0,
              "ocr_kernels: size must be two positive ints; got ", size);
  ResizedChecked c;
  c.H = size[0];
  c.W = size[1];
  c.ic = ic_mask(tags);
  c.prior = prior_for_kernel(prior, group, math_dtype(logits.scalar_type()), logits);
  if (target.has_value()) {
    TORCH_CHECK(target->dim() == 3 && target->size(0) == logits.size(0) &&
                    target->size(1) == c.H && target->size(2) == c.W,
                "ocr_kernels: target must be [", logits.size(0), ", ", c.H, ", ", c.W, "]; got ",
                target->sizes());
    TORCH_CHECK(target->device() == logits.device(), "ocr_kernels: target must be on ",
                logits.device());
    TORCH_CHECK(!at::isFloatingType(target->scalar_type()) && target->scalar_type() != at::kBool,
                "ocr_kernels: target must be an integer tensor; got ", target->scalar_type());
    c.target = target->to(at::kLong).contiguous();
  }
  return c;
}

// A full-resolution map argument [B, H, W] in the math dtype, walkable as (b, p).
inline at::Tensor full_map(const char* name, const at::Tensor& m, const at::Tensor& logits,
                           int64_t H, int64_t W, at::ScalarType acc) {
  TORCH_CHECK(m.dim() == 3 && m.size(0) == logits.size(0) && m.size(1) == H && m.size(2) == W,
              "ocr_kernels: ", name, " must be [", logits.size(0), ", ", H, ", ", W, "]; got ",
              m.sizes());
  TORCH_CHECK(m.device() == logits.device(), "ocr_kernels: ", name, " must be on ", logits.device());
  return map_for_kernel(m, acc);
}

// The backward's full-resolution inputs, checked, in the math dtype (g_ce undefined without a
// target); the output size is loss_map's.
struct ResizedBackwardMaps {
  at::Tensor loss, g_ocr, g_ce;
};

inline ResizedBackwardMaps resized_backward_maps(const at::Tensor& loss_in,
                                                 const at::Tensor& grad_ocr_in,
                                                 const c10::optional<at::Tensor>& grad_ce_in,
                                                 const at::Tensor& logits, const ResizedChecked& K) {
  const at::ScalarType acc = math_dtype(logits.scalar_type());
  ResizedBackwardMaps m;
  m.loss = full_map("loss_map", loss_in, logits, K.H, K.W, acc);
  m.g_ocr = full_map("grad_map", grad_ocr_in, logits, K.H, K.W, acc);
  if (K.target.defined()) {
    TORCH_CHECK(grad_ce_in.has_value(), "ocr_kernels: grad_ce is required with a target");
    m.g_ce = full_map("grad_ce", *grad_ce_in, logits, K.H, K.W, acc);
  }
  return m;
}

// The call's inputs as ResizeArgs (outputs, backward maps and buffers are set by the caller).
inline ResizeArgs resize_args(const at::Tensor& z, const ResizedChecked& K, bool align_corners,
                              double margin, double threshold, int64_t group, int64_t pixels,
                              int64_t ignore_index) {
  ResizeArgs A{};
  A.dtype = ocr_kernels::dtype_code(z.scalar_type());
  A.z = z.data_ptr();
  A.B = z.size(0);
  A.C1 = z.size(1);
  A.h = z.size(2);
  A.w = z.size(3);
  A.sB = z.stride(0);
  A.sC = z.stride(1);
  A.sH = z.stride(2);
  A.sW = z.stride(3);
  A.H = K.H;
  A.W = K.W;
  A.align_corners = align_corners;
  A.ic = K.ic.data_ptr<uint8_t>();
  A.prior = K.prior.numel() ? K.prior.data_ptr() : nullptr;
  A.margin = margin;
  A.threshold = threshold;
  A.group = (int)group;
  A.pixels = (int)pixels;
  if (K.target.defined()) {
    A.target = K.target.data_ptr<int64_t>();
    A.tl = layout2(K.target);
    A.ignore_index = ignore_index;
  }
  return A;
}

inline void set_backward_maps(ResizeArgs& A, const ResizedBackwardMaps& m) {
  A.loss = m.loss.data_ptr();
  A.ll = layout2(m.loss);
  A.g_ocr = m.g_ocr.data_ptr();
  A.gol = layout2(m.g_ocr);
  if (m.g_ce.defined()) {
    A.g_ce = m.g_ce.data_ptr();
    A.gcl = layout2(m.g_ce);
  }
}

inline void set_grad(ResizeArgs& A, const at::Tensor& grad) {
  A.grad = grad.data_ptr();
  A.gsB = grad.stride(0);
  A.gsC = grad.stride(1);
  A.gsH = grad.stride(2);
  A.gsW = grad.stride(3);
}

// The four resized ops of csrc/ops.cpp over one backend's
//   forward(logits, target?, tags, prior?, size, align_corners, margin, threshold, group, pixels,
//           ignore_index) -> (ocr_map, ce_map)
//   backward(grad_ocr, grad_ce?, logits, target?, tags, prior?, ocr_map, align_corners, threshold,
//            group, pixels, ignore_index) -> grad of the low-resolution logits
// (the backward takes the output size from ocr_map).
template <auto Forward, auto Backward>
struct ResizedOps {
  using OptT = c10::optional<at::Tensor>;

  static at::Tensor loss_map(const at::Tensor& logits, const at::Tensor& tags, const OptT& prior,
                             at::IntArrayRef size, bool align_corners, double margin,
                             double threshold, int64_t group, int64_t pixels) {
    return std::get<0>(Forward(logits, c10::nullopt, tags, prior, size, align_corners, margin,
                               threshold, group, pixels, 0));
  }
  static at::Tensor loss_map_backward(const at::Tensor& grad_map, const at::Tensor& logits,
                                      const at::Tensor& tags, const OptT& prior,
                                      const at::Tensor& loss_map, bool align_corners,
                                      double margin, double threshold, int64_t group,
                                      int64_t pixels) {
    return Backward(grad_map, c10::nullopt, logits, c10::nullopt, tags, prior, loss_map,
                    align_corners, threshold, group, pixels, 0);
  }
  static std::tuple<at::Tensor, at::Tensor> seg_maps(const at::Tensor& logits,
                                                     const at::Tensor& target,
                                                     const at::Tensor& tags, const OptT& prior,
                                                     bool align_corners, double margin,
                                                     double threshold, int64_t group,
                                                     int64_t pixels, int64_t ignore_index) {
    TORCH_CHECK(target.dim() == 3, "ocr_kernels: target must be [B, H, W]; got ", target.sizes());
    auto out = Forward(logits, target, tags, prior, target.sizes().slice(1), align_corners, margin,
                       threshold, group, pixels, ignore_index);
    return {std::get<1>(out), std::get<0>(out)};
  }
  static at::Tensor seg_maps_backward(const at::Tensor& grad_ce, const at::Tensor& grad_ocr,
                                      const at::Tensor& logits, const at::Tensor& target,
                                      const at::Tensor& tags, const OptT& prior,
                                      const at::Tensor& ocr_map, bool align_corners, double margin,
                                      double threshold, int64_t group, int64_t pixels,
                                      int64_t ignore_index) {
    return Backward(grad_ocr, grad_ce, logits, target, tags, prior, ocr_map, align_corners,
                    threshold, group, pixels, ignore_index);
  }
  static void register_impls(torch::Library& m) {
    m.impl("ocr_loss_map_resized", &loss_map);
    m.impl("ocr_loss_map_resized_backward", &loss_map_backward);
    m.impl("seg_ocr_loss_maps_resized", &seg_maps);
    m.impl("seg_ocr_loss_maps_resized_backward", &seg_maps_backward);
  }
};

}  // namespace ocr
