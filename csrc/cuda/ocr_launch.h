// Launchers of the OCR CUDA kernels: raw pointers, sizes, strides and a cudaStream_t only, so
// that ocr_kernel.cu includes no torch header and compiles with plain nvcc (docs/kernel-notes.md);
// the torch-facing side is ocr_binding.cpp.
#pragma once

#include <cuda_runtime_api.h>
#include <stdint.h>

#include "../ocr_pixel.h"

namespace ocr {

struct CudaArgs {
  int dtype;  // ocr_kernels::DType (csrc/common.h) of the logits and of the gradient
  const void* z;
  Layout3 zl;
  void* grad;
  Layout3 gl;
  const uint8_t* ic;  // [B, C1], contiguous
  const void* prior;  // [C1, C1] in the math dtype (fp64 for fp64 logits, else fp32); ada only
  double margin, threshold;
  int group, pixels;
  const int64_t* target;  // null: no cross-entropy term
  Layout2 tl;
  int64_t ignore_index;
  void* ocr_out;  // forward outputs: contiguous [B, N] in the math dtype
  void* ce_out;
  uint32_t* mask_out;  // without a target: the loss mask, contiguous [B, mask_words(N)]
  const void* loss;  // backward inputs, math dtype, any (collapsed) strides
  Layout2 ll;
  const uint32_t* mask;  // without a target: the forward's mask_out
  const void* g_ocr;
  Layout2 gol;
  const void* g_ce;
  Layout2 gcl;
  // seg_ocr_objective: the CE weight map (null: 1), math dtype, any (collapsed) strides, and
  // coef = [coef_ce, coef_ocr] (math dtype, on the device: the kernel reads it)
  const void* ce_weight;
  Layout2 wl;
  const void* coef;
};

// Enqueue on `stream`; returns the launch error (no synchronisation).
cudaError_t launch_ocr_forward(const CudaArgs& args, cudaStream_t stream);
cudaError_t launch_ocr_backward(const CudaArgs& args, cudaStream_t stream);
// seg_ocr_objective: ocr_out, ce_out and grad (through gl) from z, target, ce_weight and coef.
cudaError_t launch_ocr_objective(const CudaArgs& args, cudaStream_t stream);
// scale_grad_: grad[i] *= *g for i < n unless *g == 1 (decided on the device); grad of dtype
// (ocr_kernels::DType), g one value in its math dtype.
cudaError_t launch_scale_grad(int dtype, void* grad, const void* g, int64_t n, cudaStream_t stream);

}  // namespace ocr
