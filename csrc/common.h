// Conventions shared by the kernels of every loss, without torch headers (the .cu files include
// it; see docs/kernel-notes.md): the element-type codes the CUDA launchers receive.
#pragma once

namespace ocr_kernels {

// The binding maps torch dtypes onto these (common_host.h, dtype_code); the math type is fp64
// for DTYPE_F64 and fp32 for the others (common_host.h, math_dtype).
enum DType : int { DTYPE_F32 = 0, DTYPE_F64 = 1, DTYPE_F16 = 2, DTYPE_BF16 = 3 };

}  // namespace ocr_kernels
