"""The backward of every fast op is first-order only: the one rule for a second backward.

The fused kernels compute d loss / d logits directly; nothing differentiates that computation.
Under ``create_graph=True`` (a gradient penalty, a Hessian-vector product) a gradient of theirs
must not look constant -- a second backward through it would silently give zeros -- so it is
returned attached to a node that raises, naming the op, when anything differentiates it.
First-order gradients, with or without create_graph, are unchanged.
"""
from __future__ import annotations

import functools

import torch


def double_backward_message(op: str, backend: str) -> str:
    return (f"{op} on backend {backend!r} has first-order gradients only: differentiating its "
            f"gradient (create_graph=True, then a second backward) is not supported; use "
            f'backend="reference" for higher-order gradients')


def first_order_only(op: str, backend: str):
    """Decorator for a fast op's autograd backward(ctx, *grad_outputs) (ctx.saved_tensors holds
    the differentiable inputs)."""

    def wrap(backward):
        @functools.wraps(backward)
        def wrapped(ctx, *grad_outputs):
            if not torch.is_grad_enabled():  # create_graph=False: nothing will differentiate it
                return backward(ctx, *grad_outputs)
            with torch.no_grad():
                grads = backward(ctx, *grad_outputs)
            # The error node takes the differentiable inputs as extra inputs so that it lies on
            # the path from each gradient back to them: torch.autograd.grad(..., inputs) runs it.
            anchors = [t for t in (*ctx.saved_tensors, *grad_outputs)
                       if isinstance(t, torch.Tensor) and t.requires_grad]
            if not anchors:
                return grads
            err = torch._C._functions.DelayedError(double_backward_message(op, backend).encode(),
                                                   1 + len(anchors))
            out = [err(g, *anchors)[0] if isinstance(g, torch.Tensor) else g
                   for g in (grads if isinstance(grads, tuple) else (grads,))]
            return tuple(out) if isinstance(grads, tuple) else out[0]

        return wrapped

    return wrap
