// Launchers of the W-OoD CUDA kernels (wood_kernel.cu). Raw pointers, sizes and a stream only:
// the .cu includes nothing of torch (docs/kernel-notes.md), the torch-facing code is
// wood_binding.cpp.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "../common.h"

namespace wood {

// `dtype` is the ocr_kernels::DType code of the inputs (csrc/common.h).

// out[n, k] = |x_n - c_k| (x [N, D], c [K, D] contiguous; out [N, K] contiguous, acc type).
void launch_distances(const void* x, const void* c, void* out, int64_t N, int64_t K, int64_t D,
                      int dtype, cudaStream_t stream);

// out[i, :] = sum_j grad_coef(*gout, w[i, j], dist[i, j]) (a_i - b_j); a [NA, D], b [J, D]
// contiguous; w, dist (acc type) with the given strides; gout a device scalar (acc type);
// out [NA, D] contiguous in a's dtype.
void launch_weighted_diff(const void* a, const void* b, const void* w, int64_t sw0, int64_t sw1,
                          const void* dist, int64_t sd0, int64_t sd1, const void* gout, void* out,
                          int64_t NA, int64_t J, int64_t D, int dtype, cudaStream_t stream);

// idx[n] = argmin_k |x_n - c_k| (lowest index on ties), mind[n] = that squared distance.
void launch_assign(const void* x, const void* c, int64_t* idx, void* mind, int64_t N, int64_t K,
                   int64_t D, int dtype, cudaStream_t stream);

}  // namespace wood
