// Host-side conventions shared by the CPU and CUDA bindings of every loss: the math dtype and the
// dtype code a CUDA launcher receives.
#pragma once

#include <ATen/ATen.h>

#include "common.h"

namespace ocr_kernels {

// fp64 math for fp64 inputs, fp32 math for every other floating dtype (the Python side of the
// same rule: ocr_kernels/_tensors.py, math_dtype).
inline at::ScalarType math_dtype(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

inline int dtype_code(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return DTYPE_F32;
    case at::kDouble: return DTYPE_F64;
    case at::kHalf: return DTYPE_F16;
    case at::kBFloat16: return DTYPE_BF16;
    default: TORCH_CHECK(false, "ocr_kernels: unsupported dtype ", t);
  }
  return DTYPE_F32;
}

}  // namespace ocr_kernels
