"""Loading of the C++/CUDA extension (csrc/). Replaced by the csrc backend work."""
from __future__ import annotations

from typing import Optional


def extension_unavailable_reason(backend: str) -> Optional[str]:
    return "the C++ extension is not part of this build yet"
