// The torch-facing side of the OCR CUDA kernels: checks, layouts, the current stream, and the
// CUDA registrations of the ops defined in csrc/ops.cpp. Built only where torch has CUDA.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "../ocr_host.h"
#include "ocr_launch.h"

namespace ocr {
namespace {

CudaArgs make_args(const at::Tensor& z, const at::Tensor& ic, const at::Tensor& prior,
                   double margin, double threshold, int64_t group, int64_t pixels) {
  CudaArgs A{};
  A.dtype = ocr_kernels::dtype_code(z.scalar_type());
  A.z = z.data_ptr();
  A.zl = layout3(z);
  A.ic = ic.data_ptr<uint8_t>();
  A.prior = prior.numel() ? prior.data_ptr() : nullptr;
  A.margin = margin;
  A.threshold = threshold;
  A.group = (int)group;
  A.pixels = (int)pixels;
  return A;
}

void check_launch(cudaError_t err) {
  TORCH_CHECK(err == cudaSuccess, "ocr_kernels: CUDA kernel launch failed: ", cudaGetErrorString(err));
}

std::tuple<at::Tensor, at::Tensor> forward_cuda(const at::Tensor& logits_in,
                                                const c10::optional<at::Tensor>& target_in,
                                                const at::Tensor& tags,
                                                const c10::optional<at::Tensor>& prior_in,
                                                double margin, double threshold, int64_t group,
                                                int64_t pixels, int64_t ignore_index) {
  check_common(logits_in, tags, group, pixels);
  const c10::cuda::CUDAGuard guard(logits_in.device());
  const at::Tensor z = logits_for_kernel(logits_in);
  const at::ScalarType acc = math_dtype(z.scalar_type());
  const at::Tensor ic = ic_mask(tags);
  const at::Tensor prior = prior_for_kernel(prior_in, group, acc, z);
  at::Tensor ocr_map = new_map(z);
  at::Tensor target, ce_map;
  CudaArgs A = make_args(z, ic, prior, margin, threshold, group, pixels);
  A.ocr_out = ocr_map.data_ptr();
  if (target_in.has_value()) {
    target = target_for_kernel(*target_in, z);
    ce_map = new_map(z);
    A.target = target.data_ptr<int64_t>();
    A.tl = layout2(target);
    A.ignore_index = ignore_index;
    A.ce_out = ce_map.data_ptr();
  }
  check_launch(launch_ocr_forward(A, c10::cuda::getCurrentCUDAStream().stream()));
  return {ocr_map, ce_map};
}

at::Tensor backward_cuda(const at::Tensor& grad_ocr_in, const c10::optional<at::Tensor>& grad_ce_in,
                         const at::Tensor& logits_in, const c10::optional<at::Tensor>& target_in,
                         const at::Tensor& tags, const c10::optional<at::Tensor>& prior_in,
                         const at::Tensor& loss_in, double threshold, int64_t group,
                         int64_t pixels, int64_t ignore_index) {
  check_common(logits_in, tags, group, pixels);
  const c10::cuda::CUDAGuard guard(logits_in.device());
  const at::Tensor z = logits_for_kernel(logits_in);
  const at::ScalarType acc = math_dtype(z.scalar_type());
  const at::Tensor ic = ic_mask(tags);
  const at::Tensor prior = prior_for_kernel(prior_in, group, acc, z);
  check_map("grad_map", grad_ocr_in, z);
  check_map("loss_map", loss_in, z);
  const at::Tensor g_ocr = map_for_kernel(grad_ocr_in, acc);
  const at::Tensor loss = map_for_kernel(loss_in, acc);
  at::Tensor grad = grad_like(logits_in);
  at::Tensor target, g_ce;
  CudaArgs A = make_args(z, ic, prior, 0.0, threshold, group, pixels);
  A.grad = grad.data_ptr();
  A.gl = layout3(grad);
  A.loss = loss.data_ptr();
  A.ll = layout2(loss);
  A.g_ocr = g_ocr.data_ptr();
  A.gol = layout2(g_ocr);
  if (target_in.has_value()) {
    target = target_for_kernel(*target_in, z);
    TORCH_CHECK(grad_ce_in.has_value(), "ocr_kernels: grad_ce is required with a target");
    check_map("grad_ce", *grad_ce_in, z);
    g_ce = map_for_kernel(*grad_ce_in, acc);
    A.target = target.data_ptr<int64_t>();
    A.tl = layout2(target);
    A.ignore_index = ignore_index;
    A.g_ce = g_ce.data_ptr();
    A.gcl = layout2(g_ce);
  }
  check_launch(launch_ocr_backward(A, c10::cuda::getCurrentCUDAStream().stream()));
  return grad;
}

at::Tensor ocr_loss_map_cuda(const at::Tensor& logits, const at::Tensor& tags,
                             const c10::optional<at::Tensor>& prior, double margin,
                             double threshold, int64_t group, int64_t pixels) {
  return std::get<0>(forward_cuda(logits, c10::nullopt, tags, prior, margin, threshold, group,
                                  pixels, 0));
}

at::Tensor ocr_loss_map_backward_cuda(const at::Tensor& grad_map, const at::Tensor& logits,
                                      const at::Tensor& tags,
                                      const c10::optional<at::Tensor>& prior,
                                      const at::Tensor& loss_map, double margin, double threshold,
                                      int64_t group, int64_t pixels) {
  return backward_cuda(grad_map, c10::nullopt, logits, c10::nullopt, tags, prior, loss_map,
                       threshold, group, pixels, 0);
}

std::tuple<at::Tensor, at::Tensor> seg_ocr_loss_maps_cuda(
    const at::Tensor& logits, const at::Tensor& target, const at::Tensor& tags,
    const c10::optional<at::Tensor>& prior, double margin, double threshold, int64_t group,
    int64_t pixels, int64_t ignore_index) {
  auto out = forward_cuda(logits, target, tags, prior, margin, threshold, group, pixels,
                          ignore_index);
  return {std::get<1>(out), std::get<0>(out)};
}

at::Tensor seg_ocr_loss_maps_backward_cuda(const at::Tensor& grad_ce, const at::Tensor& grad_ocr,
                                           const at::Tensor& logits, const at::Tensor& target,
                                           const at::Tensor& tags,
                                           const c10::optional<at::Tensor>& prior,
                                           const at::Tensor& ocr_map, double margin,
                                           double threshold, int64_t group, int64_t pixels,
                                           int64_t ignore_index) {
  return backward_cuda(grad_ocr, grad_ce, logits, target, tags, prior, ocr_map, threshold, group,
                       pixels, ignore_index);
}

}  // namespace

TORCH_LIBRARY_IMPL(ocr_kernels, CUDA, m) {
  m.impl("ocr_loss_map", &ocr_loss_map_cuda);
  m.impl("ocr_loss_map_backward", &ocr_loss_map_backward_cuda);
  m.impl("seg_ocr_loss_maps", &seg_ocr_loss_maps_cuda);
  m.impl("seg_ocr_loss_maps_backward", &seg_ocr_loss_maps_backward_cuda);
}

}  // namespace ocr
