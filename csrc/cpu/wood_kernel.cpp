// CPU kernels of the W-OoD distance ops (schemas in csrc/ops.cpp; per-pair math in wood_pixel.h).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <functional>
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

// The whole W-OoD distance loss in one call (loss-semantics.md section 2): distances of the
// features to the class then the OoD centroids, the OoD threshold (kk-th largest nonzero OoD
// distance), the loss and dL/dd. Returns (loss, w = dL/dd [B, C + K], d [B, C + K]); w and d are
// what the backward needs. One op instead of two distance calls and a dozen small tensor ops:
// at the usual sizes the loss is latency-bound.
std::tuple<at::Tensor, at::Tensor, at::Tensor> loss_cpu(const at::Tensor& x_, const at::Tensor& labels,
                                                        const at::Tensor& cc_, const at::Tensor& oc_,
                                                        double topk) {
  check_pair(x_, cc_, "wood_loss");
  check_pair(x_, oc_, "wood_loss");
  const at::Tensor x = x_.contiguous(), cc = cc_.contiguous(), oc = oc_.contiguous();
  const int64_t B = x.size(0), C = cc.size(0), K = oc.size(0), D = x.size(1), J = C + K;
  TORCH_CHECK(labels.dim() == 2 && labels.size(0) == B && labels.size(1) == C,
              "wood_loss: labels must be [", B, ", ", C, "]");
  const at::ScalarType acc = math_dtype(x.scalar_type());
  at::Tensor d = at::empty({B, J}, x.options().dtype(acc));
  at::Tensor w = at::empty({B, J}, x.options().dtype(acc));
  at::Tensor loss = at::empty({}, x.options().dtype(acc));
  const at::Tensor y = labels.to(acc).contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "wood_loss_cpu", [&] {
    using acc_t = acc_of<scalar_t>;
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* cp = cc.data_ptr<scalar_t>();
    const scalar_t* op = oc.data_ptr<scalar_t>();
    acc_t* dp = d.data_ptr<acc_t>();
    acc_t* wp = w.data_ptr<acc_t>();
    const acc_t* yp = y.data_ptr<acc_t>();
    auto cvt = [](scalar_t v) { return static_cast<acc_t>(v); };
    at::parallel_for(0, B * J, grain(D), [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        const int64_t b = p / J, j = p - b * J;
        const scalar_t* cj = j < C ? cp + j * D : op + (j - C) * D;
        dp[p] = root(sqdist<acc_t>(xp + b * D, cj, D, cvt));
      }
    });
    // threshold: kk = floor(n (1 - topk)) as in reference.kept_count (one double product)
    std::vector<acc_t> nz;
    nz.reserve(B * K);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t j = C; j < J; ++j)
        if (dp[b * J + j] != acc_t(0)) nz.push_back(dp[b * J + j]);
    const int64_t kk = static_cast<int64_t>(std::floor(static_cast<double>(nz.size()) * (1.0 - topk)));
    acc_t thr = acc_t(0);
    if (kk > 0) {
      std::nth_element(nz.begin(), nz.begin() + (kk - 1), nz.end(), std::greater<acc_t>());
      thr = nz[kk - 1];
    }
    const acc_t inv = acc_t(1) / static_cast<acc_t>(B * K);
    double s_in = 0.0, s_ood = 0.0;
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t j = 0; j < J; ++j) {
        const acc_t v = dp[b * J + j];
        if (j < C) {
          const acc_t yv = yp[b * C + j];
          wp[b * J + j] = yv * inv;
          s_in += static_cast<double>(v) * static_cast<double>(yv);
        } else {
          const bool sel = v < thr;
          wp[b * J + j] = sel ? -inv : acc_t(0);
          if (sel) s_ood += static_cast<double>(v);
        }
      }
    }
    loss.fill_(static_cast<acc_t>((s_in - s_ood) / static_cast<double>(B * K)));
  });
  return {loss, w, d};
}

// Gradients of wood_loss from its saved w and d: g_bj = gout w_bj / d_bj (0 where d = 0);
// grad_x[b] = sum_j g_bj (x_b - c_j); grad_c[j] = -sum_b g_bj (x_b - c_j) for the class then the
// OoD centroids (empty [0, D] unless centroid_grads). Direct differences, in x's dtype.
std::tuple<at::Tensor, at::Tensor, at::Tensor> loss_backward_cpu(
    const at::Tensor& gout, const at::Tensor& x_, const at::Tensor& cc_, const at::Tensor& oc_,
    const at::Tensor& w_, const at::Tensor& d_, bool centroid_grads) {
  check_pair(x_, cc_, "wood_loss_backward");
  check_pair(x_, oc_, "wood_loss_backward");
  const at::Tensor x = x_.contiguous(), cc = cc_.contiguous(), oc = oc_.contiguous();
  const int64_t B = x.size(0), C = cc.size(0), K = oc.size(0), D = x.size(1), J = C + K;
  const at::ScalarType acc = math_dtype(x.scalar_type());
  const at::Tensor w = w_.to(acc).contiguous(), d = d_.to(acc).contiguous();
  TORCH_CHECK(w.sizes() == d.sizes() && w.dim() == 2 && w.size(0) == B && w.size(1) == J,
              "wood_loss_backward: w and d must be [", B, ", ", J, "]");
  at::Tensor gx = at::empty({B, D}, x.options());
  at::Tensor gcc = at::empty({centroid_grads ? C : 0, D}, x.options());
  at::Tensor goc = at::empty({centroid_grads ? K : 0, D}, x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "wood_loss_backward_cpu", [&] {
    using acc_t = acc_of<scalar_t>;
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* cp = cc.data_ptr<scalar_t>();
    const scalar_t* op = oc.data_ptr<scalar_t>();
    const acc_t gv = static_cast<acc_t>(gout.item<double>());  // a CPU scalar: no device sync
    std::vector<acc_t> g(B * J);
    const acc_t* wp = w.data_ptr<acc_t>();
    const acc_t* dp = d.data_ptr<acc_t>();
    for (int64_t p = 0; p < B * J; ++p) g[p] = grad_coef(gv, wp[p], dp[p]);
    auto cvt = [](scalar_t v) { return static_cast<acc_t>(v); };
    auto centroid = [&](int64_t j) { return j < C ? cp + j * D : op + (j - C) * D; };
    // rows of grad_x, then (when asked) rows of grad_c, as one parallel range
    const int64_t rows = B + (centroid_grads ? J : 0);
    at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> buf(D);
      for (int64_t r = begin; r < end; ++r) {
        std::fill(buf.begin(), buf.end(), acc_t(0));
        scalar_t* out;
        if (r < B) {
          for (int64_t j = 0; j < J; ++j) {
            const acc_t gj = g[r * J + j];
            if (gj != acc_t(0)) accumulate(buf.data(), xp + r * D, centroid(j), gj, D, cvt);
          }
          out = gx.data_ptr<scalar_t>() + r * D;
        } else {
          const int64_t j = r - B;
          for (int64_t b = 0; b < B; ++b) {
            const acc_t gj = g[b * J + j];
            if (gj != acc_t(0)) accumulate(buf.data(), centroid(j), xp + b * D, gj, D, cvt);
          }
          out = (j < C ? gcc.data_ptr<scalar_t>() + j * D : goc.data_ptr<scalar_t>() + (j - C) * D);
        }
        for (int64_t e = 0; e < D; ++e) out[e] = static_cast<scalar_t>(buf[e]);
      }
    });
  });
  return {gx, gcc, goc};
}

}  // namespace

TORCH_LIBRARY_IMPL(ocr_kernels, CPU, m) {
  m.impl("wood_loss", &loss_cpu);
  m.impl("wood_loss_backward", &loss_backward_cpu);
  m.impl("wood_distances", &distances_cpu);
  m.impl("wood_weighted_diff", &weighted_diff_cpu);
  m.impl("wood_assign", &assign_cpu);
}

}  // namespace wood
