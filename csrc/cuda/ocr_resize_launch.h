// Launchers of the fused-upsampling OCR CUDA kernels: the untyped call (ResizeArgs of
// ocr_resize_pixel.h: raw pointers, sizes, strides) and a cudaStream_t only, so that
// ocr_resize_kernel.cu includes no torch header and compiles with plain nvcc
// (docs/kernel-notes.md); the torch-facing side is ocr_resize_binding.cpp.
#pragma once

#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

#include "../ocr_resize_pixel.h"

namespace ocr {

// Forward: ocr_out (and ce_out with a target) for every output pixel.
cudaError_t launch_resized_forward(const ResizeArgs& args, cudaStream_t stream);
// The planes of the backward's buffer args.corners ([planes, B, C1, h, w], math dtype, no
// initialisation needed): 2 on the fast path (ocr_resize_thread.h), 4 on the generic one.
int resized_corner_planes(const ResizeArgs& args);
// Backward: the cell pass into args.corners, then the gather into args.grad. Returns cudaErrorInvalidValue when one warp's scratch
// tile (C1 × 33 values of the math dtype) exceeds the device's shared memory per block.
cudaError_t launch_resized_backward(const ResizeArgs& args, cudaStream_t stream);

}  // namespace ocr
