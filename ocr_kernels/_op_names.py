"""Qualified names of the Python-registered (Triton) custom ops, versioned by their contract.

torch.compile's on-disk caches (Inductor's FX-graph cache and AOTAutograd's cache, under
``$TORCHINDUCTOR_CACHE_DIR``, default ``/tmp/torchinductor_$USER``) key a custom op by its qualified
name only: neither the op's code nor its fake is hashed. A graph compiled once keeps the output
shapes the fake gave then and asserts them when it runs. So when a forward op's outputs change --
the OC statistics the backward reads went from two planes to one for ``ocr_loss`` on 2026-12-03 --
a process with the new package loads the old graph and fails with "expected size 1==2" (the CI run
of 5fbfb9b did, on a machine whose cache held graphs from the day before). Each Triton op's name
carries ``TRITON_OPS_CONTRACT``, so graphs compiled against another contract miss the cache.

Bump it whenever an op's schema, or the shape, dtype or meaning of what its fake returns,
changes; tests/test_op_contracts.py holds the current contract and fails until it is bumped
(3: the seg objective's two ops were added, 2026-12-03).
The C++ ops (csrc/ops.cpp) keep their names: their outputs have not changed since they were
first cached, and the same test pins them.
"""
from __future__ import annotations

TRITON_OPS_CONTRACT = 3


def triton_op_name(name: str) -> str:
    """The qualified name ``ocr_kernels::<name>_c<TRITON_OPS_CONTRACT>`` of a Triton op."""
    return f"ocr_kernels::{name}_c{TRITON_OPS_CONTRACT}"
