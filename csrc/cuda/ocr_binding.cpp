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

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_cuda(const at::Tensor& logits,
                                                const c10::optional<at::Tensor>& target,
                                                const at::Tensor& tags,
                                                const c10::optional<at::Tensor>& prior,
                                                double margin, double threshold, int64_t group,
                                                int64_t pixels, int64_t ignore_index) {
  const c10::cuda::CUDAGuard guard(logits.device());
  const Prepared P = prepare(logits, target, tags, prior, group, pixels);
  at::Tensor ocr_map = new_map(P.z);
  at::Tensor ce_map, mask;
  CudaArgs A = make_args(P.z, P.ic, P.prior, margin, threshold, group, pixels);
  A.ocr_out = ocr_map.data_ptr();
  if (P.ce()) {
    ce_map = new_map(P.z);
    A.target = P.target.data_ptr<int64_t>();
    A.tl = layout2(P.target);
    A.ignore_index = ignore_index;
    A.ce_out = ce_map.data_ptr();
  } else {
    mask = new_mask(P.z);
    A.mask_out = reinterpret_cast<uint32_t*>(mask.data_ptr<int32_t>());
  }
  check_launch(launch_ocr_forward(A, c10::cuda::getCurrentCUDAStream().stream()));
  return {ocr_map, ce_map, mask};
}

at::Tensor backward_cuda(const at::Tensor& grad_ocr_in, const c10::optional<at::Tensor>& grad_ce_in,
                         const at::Tensor& logits, const c10::optional<at::Tensor>& target,
                         const at::Tensor& tags, const c10::optional<at::Tensor>& prior,
                         const at::Tensor& loss_in, const at::Tensor& mask_in,
                         double threshold, int64_t group, int64_t pixels, int64_t ignore_index) {
  const c10::cuda::CUDAGuard guard(logits.device());
  const Prepared P = prepare(logits, target, tags, prior, group, pixels);
  const at::Tensor g_ocr = map_arg("grad_map", grad_ocr_in, P);
  const at::Tensor loss = map_arg("loss_map", loss_in, P);
  const at::Tensor g_ce = grad_ce_arg(grad_ce_in, P);
  const at::Tensor mask = P.ce() ? at::Tensor() : mask_arg(mask_in, P);
  at::Tensor grad = grad_like(logits);
  CudaArgs A = make_args(P.z, P.ic, P.prior, 0.0, threshold, group, pixels);
  A.grad = grad.data_ptr();
  A.gl = layout3(grad);
  A.loss = loss.data_ptr();
  A.ll = layout2(loss);
  A.g_ocr = g_ocr.data_ptr();
  A.gol = layout2(g_ocr);
  if (P.ce()) {
    A.target = P.target.data_ptr<int64_t>();
    A.tl = layout2(P.target);
    A.ignore_index = ignore_index;
    A.g_ce = g_ce.data_ptr();
    A.gcl = layout2(g_ce);
  } else {
    A.mask = reinterpret_cast<const uint32_t*>(mask.data_ptr<int32_t>());
  }
  check_launch(launch_ocr_backward(A, c10::cuda::getCurrentCUDAStream().stream()));
  return grad;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> objective_cuda(
    const at::Tensor& logits, const at::Tensor& target, const at::Tensor& tags,
    const c10::optional<at::Tensor>& prior, const c10::optional<at::Tensor>& ce_weight_in,
    const at::Tensor& coef_in, double margin, double threshold, int64_t group, int64_t pixels,
    int64_t ignore_index) {
  const c10::cuda::CUDAGuard guard(logits.device());
  const Prepared P = prepare(logits, target, tags, prior, group, pixels);
  const at::Tensor ce_weight = ce_weight_arg(ce_weight_in, P);
  const at::Tensor coef = coef_arg(coef_in, P);
  at::Tensor ocr_map = new_map(P.z), ce_map = new_map(P.z);
  at::Tensor grad = grad_like(logits);
  CudaArgs A = make_args(P.z, P.ic, P.prior, margin, threshold, group, pixels);
  A.ocr_out = ocr_map.data_ptr();
  A.ce_out = ce_map.data_ptr();
  A.grad = grad.data_ptr();
  A.gl = layout3(grad);
  A.target = P.target.data_ptr<int64_t>();
  A.tl = layout2(P.target);
  A.ignore_index = ignore_index;
  if (ce_weight.defined()) {
    A.ce_weight = ce_weight.data_ptr();
    A.wl = layout2(ce_weight);
  }
  A.coef = coef.data_ptr();
  check_launch(launch_ocr_objective(A, c10::cuda::getCurrentCUDAStream().stream()));
  return {ce_map, ocr_map, grad};
}

void scale_grad_cuda(at::Tensor& grad, const at::Tensor& g) {
  check_scale_grad(grad, g);
  TORCH_CHECK(grad.is_non_overlapping_and_dense(),
              "ocr_kernels: scale_grad_: grad must be dense and non-overlapping; got strides ",
              grad.strides());
  const c10::cuda::CUDAGuard guard(grad.device());
  // dense, non-overlapping and no negative strides: its numel elements are the span from
  // data_ptr on, in some order
  check_launch(launch_scale_grad(ocr_kernels::dtype_code(grad.scalar_type()), grad.data_ptr(),
                                 g.data_ptr(), grad.numel(),
                                 c10::cuda::getCurrentCUDAStream().stream()));
}

}  // namespace

TORCH_LIBRARY_IMPL(ocr_kernels, CUDA, m) {
  Ops<forward_cuda, backward_cuda>::register_impls(m);
  m.impl("seg_ocr_objective", &objective_cuda);
  m.impl("scale_grad_", &scale_grad_cuda);
}

}  // namespace ocr
