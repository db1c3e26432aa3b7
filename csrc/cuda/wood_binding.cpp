// Torch-facing CUDA registration of the W-OoD distance ops: checks, output allocation, the current
// stream; the kernels themselves are in wood_kernel.cu (no torch headers there).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../common_host.h"
#include "wood_launch.h"

namespace wood {
namespace {

using ocr_kernels::dtype_code;
using ocr_kernels::math_dtype;

void check_pair(const at::Tensor& x, const at::Tensor& c, const char* op) {
  TORCH_CHECK(x.dim() == 2 && c.dim() == 2 && x.size(1) == c.size(1), op,
              ": expected [N, D] and [K, D] tensors, got ", x.sizes(), " and ", c.sizes());
  TORCH_CHECK(x.scalar_type() == c.scalar_type(), op, ": dtypes differ");
  TORCH_CHECK(x.is_cuda() && c.device() == x.device(), op, ": expected tensors on one CUDA device");
}

at::Tensor distances_cuda(const at::Tensor& x_, const at::Tensor& c_) {
  check_pair(x_, c_, "wood_distances");
  const c10::cuda::CUDAGuard guard(x_.device());
  const at::Tensor x = x_.contiguous(), c = c_.contiguous();
  at::Tensor out = at::empty({x.size(0), c.size(0)}, x.options().dtype(math_dtype(x.scalar_type())));
  launch_distances(x.data_ptr(), c.data_ptr(), out.data_ptr(), x.size(0), c.size(0), x.size(1),
                   dtype_code(x.scalar_type()), c10::cuda::getCurrentCUDAStream());
  return out;
}

at::Tensor weighted_diff_cuda(const at::Tensor& a_, const at::Tensor& b_, const at::Tensor& w_,
                              const at::Tensor& dist_, const at::Tensor& gout_) {
  check_pair(a_, b_, "wood_weighted_diff");
  const c10::cuda::CUDAGuard guard(a_.device());
  const int64_t NA = a_.size(0), J = b_.size(0), D = a_.size(1);
  TORCH_CHECK(w_.dim() == 2 && w_.size(0) == NA && w_.size(1) == J && dist_.sizes() == w_.sizes(),
              "wood_weighted_diff: w and dist must be [", NA, ", ", J, "]");
  const at::ScalarType acc = math_dtype(a_.scalar_type());
  const at::Tensor a = a_.contiguous(), b = b_.contiguous();
  const at::Tensor w = w_.to(acc), dist = dist_.to(acc);
  const at::Tensor gout = gout_.to(a.device(), acc).reshape({});
  at::Tensor out = at::empty({NA, D}, a.options());
  launch_weighted_diff(a.data_ptr(), b.data_ptr(), w.data_ptr(), w.stride(0), w.stride(1),
                       dist.data_ptr(), dist.stride(0), dist.stride(1), gout.data_ptr(),
                       out.data_ptr(), NA, J, D, dtype_code(a.scalar_type()),
                       c10::cuda::getCurrentCUDAStream());
  return out;
}

std::tuple<at::Tensor, at::Tensor> assign_cuda(const at::Tensor& x_, const at::Tensor& c_) {
  check_pair(x_, c_, "wood_assign");
  const c10::cuda::CUDAGuard guard(x_.device());
  const at::Tensor x = x_.contiguous(), c = c_.contiguous();
  at::Tensor idx = at::empty({x.size(0)}, x.options().dtype(at::kLong));
  at::Tensor mind = at::empty({x.size(0)}, x.options().dtype(math_dtype(x.scalar_type())));
  launch_assign(x.data_ptr(), c.data_ptr(), idx.data_ptr<int64_t>(), mind.data_ptr(), x.size(0),
                c.size(0), x.size(1), dtype_code(x.scalar_type()), c10::cuda::getCurrentCUDAStream());
  return {idx, mind};
}

}  // namespace

TORCH_LIBRARY_IMPL(ocr_kernels, CUDA, m) {
  m.impl("wood_distances", &distances_cuda);
  m.impl("wood_weighted_diff", &weighted_diff_cuda);
  m.impl("wood_assign", &assign_cuda);
}

}  // namespace wood
