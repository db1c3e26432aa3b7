// CPU kernels of the W-OoD distance ops (schemas in csrc/ops.cpp; per-pair math in wood_pixel.h).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <limits>
#include <type_traits>
#include <vector>

#include "../common_host.h"
#include "../wood_pixel.h"
#include "isa.h"

namespace wood {
namespace {

template <typename scalar_t>
using acc_of = std::conditional_t<std::is_same<scalar_t, double>::value, double, float>;

void check_pair(const at::Tensor& x, const at::Tensor& c, const char* op) {
  TORCH_CHECK(x.dim() == 2 && c.dim() == 2 && x.size(1) == c.size(1), op,
              ": expected [N, D] and [K, D] tensors, got ", x.sizes(), " and ", c.sizes());
  TORCH_CHECK(x.scalar_type() == c.scalar_type(), op, ": dtypes differ (", x.scalar_type(),
              " and ", c.scalar_type(), ")");
  TORCH_CHECK(x.is_floating_point(), op, ": expected floating-point tensors");
}

using ocr_kernels::math_dtype;
namespace cpu_isa = ocr_kernels::cpu_isa;

struct Same {
  float operator()(float v) const { return v; }
};

// The fp32 hot loops are compiled for baseline x86-64 and for AVX2+FMA and picked at run time
// (cpu/isa.h, which OCR_KERNELS_CPU_ISA caps): twice the throughput where AVX2 exists.
float sqdist_f32_default(const float* a, const float* b, int64_t D) {
  return sqdist_partial<float>(a, b, 0, D, 1, Same());
}
void accumulate_f32_default(float* acc, const float* a, const float* b, float g, int64_t D) {
  accumulate_diff(acc, a, b, g, 0, D, 1, Same());
}
#if OCR_KERNELS_ISA_DISPATCH
OCR_AVX2_TARGET float sqdist_f32_avx2(const float* a, const float* b, int64_t D) {
  return sqdist_partial<float>(a, b, 0, D, 1, Same());
}
OCR_AVX2_TARGET void accumulate_f32_avx2(float* acc, const float* a, const float* b, float g,
                                         int64_t D) {
  accumulate_diff(acc, a, b, g, 0, D, 1, Same());
}
#endif

float sqdist_f32(const float* a, const float* b, int64_t D) {
#if OCR_KERNELS_ISA_DISPATCH
  if (cpu_isa::have_avx2()) return sqdist_f32_avx2(a, b, D);
#endif
  return sqdist_f32_default(a, b, D);
}

void accumulate_f32(float* acc, const float* a, const float* b, float g, int64_t D) {
#if OCR_KERNELS_ISA_DISPATCH
  if (cpu_isa::have_avx2()) return accumulate_f32_avx2(acc, a, b, g, D);
#endif
  accumulate_f32_default(acc, a, b, g, D);
}

template <typename acc_t, typename scalar_t, typename Cvt>
inline acc_t sqdist(const scalar_t* a, const scalar_t* b, int64_t D, Cvt cvt) {
  if constexpr (std::is_same<scalar_t, float>::value) {
    return sqdist_f32(a, b, D);
  } else {
    return sqdist_partial<acc_t>(a, b, 0, D, 1, cvt);
  }
}

template <typename acc_t, typename scalar_t, typename Cvt>
inline void accumulate(acc_t* acc, const scalar_t* a, const scalar_t* b, acc_t g, int64_t D, Cvt cvt) {
  if constexpr (std::is_same<scalar_t, float>::value) {
    accumulate_f32(acc, a, b, g, D);
  } else {
    accumulate_diff(acc, a, b, g, 0, D, 1, cvt);
  }
}

// Enough pairs per task that a task does ~64k multiply-adds.
int64_t grain(int64_t D) { return std::max<int64_t>(1, 65536 / std::max<int64_t>(D, 1)); }

at::Tensor distances_cpu(const at::Tensor& x_, const at::Tensor& c_) {
  check_pair(x_, c_, "wood_distances");
  const at::Tensor x = x_.contiguous(), c = c_.contiguous();  // [B, D] features: small
  const int64_t N = x.size(0), K = c.size(0), D = x.size(1);
  at::Tensor out = at::empty({N, K}, x.options().dtype(math_dtype(x.scalar_type())));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "wood_distances_cpu", [&] {
    using acc_t = acc_of<scalar_t>;
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* cp = c.data_ptr<scalar_t>();
    acc_t* op = out.data_ptr<acc_t>();
    auto cvt = [](scalar_t v) { return static_cast<acc_t>(v); };
    at::parallel_for(0, N * K, grain(D), [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        const int64_t n = p / K, k = p - n * K;
        op[p] = root(sqdist<acc_t>(xp + n * D, cp + k * D, D, cvt));
      }
    });
  });
  return out;
}

// out[i, :] = sum_j grad_coef(gout, w[i, j], dist[i, j]) * (a_i - b_j), in a's dtype.
at::Tensor weighted_diff_cpu(const at::Tensor& a_, const at::Tensor& b_, const at::Tensor& w_,
                             const at::Tensor& dist, const at::Tensor& gout) {
  check_pair(a_, b_, "wood_weighted_diff");
  const int64_t NA = a_.size(0), J = b_.size(0), D = a_.size(1);
  TORCH_CHECK(w_.dim() == 2 && w_.size(0) == NA && w_.size(1) == J && dist.sizes() == w_.sizes(),
              "wood_weighted_diff: w and dist must be [", NA, ", ", J, "]");
  const at::Tensor a = a_.contiguous(), b = b_.contiguous();
  const at::ScalarType acc = math_dtype(a.scalar_type());
  const at::Tensor w = w_.to(acc), dd = dist.to(acc);  // no copy when already acc (the usual case)
  at::Tensor out = at::empty({NA, D}, a.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "wood_weighted_diff_cpu", [&] {
    using acc_t = acc_of<scalar_t>;
    const scalar_t* ap = a.data_ptr<scalar_t>();
    const scalar_t* bp = b.data_ptr<scalar_t>();
    const acc_t* wp = w.data_ptr<acc_t>();
    const acc_t* dp = dd.data_ptr<acc_t>();
    const int64_t sw0 = w.stride(0), sw1 = w.stride(1), sd0 = dd.stride(0), sd1 = dd.stride(1);
    const acc_t gv = static_cast<acc_t>(gout.item<double>());  // a CPU scalar: no device sync
    scalar_t* op = out.data_ptr<scalar_t>();
    auto cvt = [](scalar_t v) { return static_cast<acc_t>(v); };
    at::parallel_for(0, NA, 1, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> acc(D);
      for (int64_t i = begin; i < end; ++i) {
        std::fill(acc.begin(), acc.end(), acc_t(0));
        for (int64_t j = 0; j < J; ++j) {
          const acc_t g = grad_coef(gv, wp[i * sw0 + j * sw1], dp[i * sd0 + j * sd1]);
          if (g == acc_t(0)) continue;
          accumulate(acc.data(), ap + i * D, bp + j * D, g, D, cvt);
        }
        for (int64_t d = 0; d < D; ++d) op[i * D + d] = static_cast<scalar_t>(acc[d]);
      }
    });
  });
  return out;
}

// (assignment int64 [N], squared distance to it [N] in fp32 / fp64): the fused assignment step of
// K-means; nothing of [N, K] is stored.
std::tuple<at::Tensor, at::Tensor> assign_cpu(const at::Tensor& x_, const at::Tensor& c_) {
  check_pair(x_, c_, "wood_assign");
  const at::Tensor x = x_.contiguous(), c = c_.contiguous();
  const int64_t N = x.size(0), K = c.size(0), D = x.size(1);
  at::Tensor idx = at::empty({N}, x.options().dtype(at::kLong));
  at::Tensor mind = at::empty({N}, x.options().dtype(math_dtype(x.scalar_type())));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "wood_assign_cpu", [&] {
    using acc_t = acc_of<scalar_t>;
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* cp = c.data_ptr<scalar_t>();
    int64_t* ip = idx.data_ptr<int64_t>();
    acc_t* mp = mind.data_ptr<acc_t>();
    auto cvt = [](scalar_t v) { return static_cast<acc_t>(v); };
    at::parallel_for(0, N, grain(D * K), [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n) {
        acc_t best = std::numeric_limits<acc_t>::infinity();
        int64_t best_k = 0;
        for (int64_t k = 0; k < K; ++k) {
          const acc_t sq = sqdist<acc_t>(xp + n * D, cp + k * D, D, cvt);
          if (closer(sq, best)) {
            best = sq;
            best_k = k;
          }
        }
        ip[n] = best_k;
        mp[n] = best;
      }
    });
  });
  return {idx, mind};
}

}  // namespace

TORCH_LIBRARY_IMPL(ocr_kernels, CPU, m) {
  m.impl("wood_distances", &distances_cpu);
  m.impl("wood_weighted_diff", &weighted_diff_cpu);
  m.impl("wood_assign", &assign_cpu);
}

}  // namespace wood
