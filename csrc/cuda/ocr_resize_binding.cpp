// The torch-facing side of the fused-upsampling OCR CUDA kernels: checks, layouts, the current
// stream, and the CUDA registrations of the four resized ops of csrc/ops.cpp. Built only where
// torch has CUDA.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "../ocr_resize_host.h"
#include "ocr_resize_launch.h"

namespace ocr {
namespace {

void check_launch(cudaError_t err) {
  TORCH_CHECK(err == cudaSuccess, "ocr_kernels: CUDA kernel launch failed: ", cudaGetErrorString(err));
}

std::tuple<at::Tensor, at::Tensor> forward_resized_cuda(
    const at::Tensor& logits, const c10::optional<at::Tensor>& target, const at::Tensor& tags,
    const c10::optional<at::Tensor>& prior, at::IntArrayRef size, bool align_corners,
    double margin, double threshold, int64_t group, int64_t pixels, int64_t ignore_index) {
  const c10::cuda::CUDAGuard guard(logits.device());
  const ResizedChecked K = check_resized(logits, target, tags, prior, size, group, pixels);
  const auto mopts = logits.options().dtype(math_dtype(logits.scalar_type()));
  at::Tensor ocr_map = at::empty({logits.size(0), K.H, K.W}, mopts);
  at::Tensor ce_map = K.target.defined() ? at::empty_like(ocr_map) : at::Tensor();
  ResizeArgs A = resize_args(logits, K, align_corners, margin, threshold, group, pixels,
                             ignore_index);
  A.ocr_out = ocr_map.data_ptr();
  if (K.target.defined()) A.ce_out = ce_map.data_ptr();
  check_launch(launch_resized_forward(A, c10::cuda::getCurrentCUDAStream().stream()));
  return {ocr_map, ce_map};
}

at::Tensor backward_resized_cuda(const at::Tensor& grad_ocr_in,
                                 const c10::optional<at::Tensor>& grad_ce_in,
                                 const at::Tensor& logits, const c10::optional<at::Tensor>& target,
                                 const at::Tensor& tags, const c10::optional<at::Tensor>& prior,
                                 const at::Tensor& loss_in, bool align_corners, double threshold,
                                 int64_t group, int64_t pixels, int64_t ignore_index) {
  const c10::cuda::CUDAGuard guard(logits.device());
  TORCH_CHECK(loss_in.dim() == 3, "ocr_kernels: loss_map must be [B, H, W]; got ", loss_in.sizes());
  const ResizedChecked K =
      check_resized(logits, target, tags, prior, loss_in.sizes().slice(1), group, pixels);
  const ResizedBackwardMaps M = resized_backward_maps(loss_in, grad_ocr_in, grad_ce_in, logits, K);
  ResizeArgs A = resize_args(logits, K, align_corners, 0.0, threshold, group, pixels, ignore_index);
  set_backward_maps(A, M);
  // the cells' sums: two (fast path) or four low-resolution gradients' worth, never full resolution
  at::Tensor corners = at::empty({resized_corner_planes(A), logits.size(0), logits.size(1),
                                  logits.size(2), logits.size(3)},
                                 logits.options().dtype(math_dtype(logits.scalar_type())));
  at::Tensor grad = at::empty_like(logits);
  A.corners = corners.data_ptr();
  set_grad(A, grad);
  const cudaError_t err = launch_resized_backward(A, c10::cuda::getCurrentCUDAStream().stream());
  // the launcher's one invalid-value case: a warp's scratch tile beyond the shared memory
  TORCH_CHECK(err != cudaErrorInvalidValue, "ocr_kernels: the fused-upsampling CUDA backward needs ",
              logits.size(1), " x 33 values of shared memory per warp (C+1 = ", logits.size(1),
              "), more than this device allows a block; use backend='reference' or interpolate "
              "the logits first");
  check_launch(err);
  return grad;
}

}  // namespace

TORCH_LIBRARY_IMPL(ocr_kernels, CUDA, m) {
  ResizedOps<forward_resized_cuda, backward_resized_cuda>::register_impls(m);
}

}  // namespace ocr
