// Autograd of the fused W-OoD loss op (wood_loss, kernel in csrc/cpu/distance_kernel.cpp): in C++,
// so that a training step pays no Python on the backward (the loss is latency-bound at the usual
// sizes). Fake registrations are in ocr_kernels/wood/csrc_ops.py.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/functions/basic_ops.h>
#include <torch/library.h>

namespace wood {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class WoodLoss : public torch::autograd::Function<WoodLoss> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& labels,
                               const at::Tensor& cc, const at::Tensor& oc, double topk) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("ocr_kernels::wood_loss", "")
                         .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                             const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, double)>();
    auto [loss, w, d] = op.call(x, labels, cc, oc, topk);
    ctx->save_for_backward({x, cc, oc, w, d});
    ctx->mark_non_differentiable({w, d});
    return {loss, w, d};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("ocr_kernels::wood_loss_backward", "")
                         .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                             const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                             const at::Tensor&, const at::Tensor&, bool)>();
    const auto saved = ctx->get_saved_variables();
    const bool gc = ctx->needs_input_grad(2), go = ctx->needs_input_grad(3);
    at::Tensor gout = grads[0].defined() ? grads[0] : at::zeros({}, saved[3].options());
    const bool create_graph = at::GradMode::is_enabled();
    at::Tensor gx, gcc, goc;
    {
      at::NoGradGuard no_grad;
      std::tie(gx, gcc, goc) = op.call(gout, saved[0], saved[1], saved[2], saved[3], saved[4], gc || go);
    }
    variable_list out = {ctx->needs_input_grad(0) ? gx : at::Tensor(), at::Tensor(),
                         gc ? gcc : at::Tensor(), go ? goc : at::Tensor(), at::Tensor()};
    if (create_graph) first_order_only(out, {saved[0], saved[1], saved[2], gout});
    return out;
  }

 private:
  // The rule of ocr_kernels/_autograd.py for every fast backward: under create_graph=True the
  // gradients are returned attached to a node that raises, naming the op, when differentiated (a
  // second backward would otherwise see constants and silently give zeros).
  static void first_order_only(variable_list& out, const variable_list& candidates) {
    variable_list anchors;
    for (const auto& t : candidates)
      if (t.defined() && t.requires_grad()) anchors.push_back(t);
    if (anchors.empty()) return;
    const std::string msg =
        "wood_distance_loss on backend 'cpu' has first-order gradients only: differentiating its "
        "gradient (create_graph=True, then a second backward) is not supported; use "
        "backend=\"reference\" for higher-order gradients";
    for (auto& g : out) {
      if (!g.defined()) continue;
      variable_list in{g};
      in.insert(in.end(), anchors.begin(), anchors.end());
      auto err = std::make_shared<torch::autograd::DelayedError>(msg, static_cast<int64_t>(in.size()));
      g = err->apply(std::move(in))[0];
    }
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor> loss_autograd(const at::Tensor& x, const at::Tensor& labels,
                                                             const at::Tensor& cc, const at::Tensor& oc,
                                                             double topk) {
  auto r = WoodLoss::apply(x, labels, cc, oc, topk);
  return {r[0], r[1], r[2]};
}

}  // namespace

TORCH_LIBRARY_IMPL(ocr_kernels, Autograd, m) { m.impl("wood_loss", &loss_autograd); }

}  // namespace wood
