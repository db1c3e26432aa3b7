"""Reading a cubin without a GPU: resources (cuobjdump -res-usage), SASS (nvdisasm -c -gi) and a
loop-aware count of the instructions one thread EXECUTES.

Method (the static model of static.py rests on it):
- The SASS comes from ``nvdisasm -c -gi``: each instruction with the source lines it came from,
  including the call sites it was inlined through (so an instruction of a helper called inside a
  Python ``for`` carries that ``for``'s line).
- Loops are the backward branches: a ``BRA`` whose target is at or before itself closes a loop
  spanning [target, branch]. Nesting follows from the address ranges. An unconditional branch to
  itself is the padding trap after ``EXIT`` and is not a loop.
- Each loop gets a trip count from the caller (static.py maps it to the source loop whose body
  holds most of its instructions' lines and evaluates that loop's ``range`` for the case).
- An instruction executes (product of the trip counts of the loops around it) times per thread.
  Forward branches are counted as if both sides ran: an upper bound. In the Triton kernels they
  guard zero-trip loops and epilogues (a few dozen instructions); a data-dependent slow path (the
  K-means tile recompute) is the exception and is listed in the report's approximations. The
  exception to the exception: a branch that a whole program takes one way (``if tl.max(mask)``
  over the program's pixels) weighs each side by the share of programs that take it
  (``Sass.shares``, set by static.py from the case's scenario).
- Spills are the local-memory stores/loads (STL/LDL) in the SASS, in bytes by access width: what
  ``ptxas -v`` reports as spill stores/loads when a kernel has no local arrays of its own.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, FrozenSet, List, Optional, Tuple

_INSTR = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
_LABEL = re.compile(r"^(\.L_x_\d+):")
_LINE = re.compile(r'line (\d+)')
_FILE_LINE = re.compile(r'File "([^"]+)", line (\d+)')
_TARGET = re.compile(r"`\((\.L_x_\d+)\)")
_RES = re.compile(r"Function ([^:\s]+):\s*(.*)")


@dataclass
class Instr:
    addr: int
    opcode: str  # full opcode with modifiers, e.g. MUFU.EX2, LDG.E.128 (no predicate)
    operands: str
    lines: FrozenSet[Tuple[str, int]]  # (file, line) of the instruction and its inlining call sites

    @property
    def base(self) -> str:
        return self.opcode.split(".")[0]


@dataclass
class Loop:
    start: int  # address of the first instruction of the body (the branch target)
    end: int  # address of the backward branch
    trips: Optional[float] = None  # per entry of the enclosing loop; None: unknown
    source: Optional[str] = None  # what it was mapped to (for the report)

    def contains(self, addr: int) -> bool:
        return self.start <= addr <= self.end


@dataclass
class Sass:
    instrs: List[Instr]
    loops: List[Loop] = field(default_factory=list)
    # addr -> share of the threads (whole programs) that execute the instruction: the two sides of
    # a program-uniform branch (static.py); 1 for every other instruction
    shares: Dict[int, float] = field(default_factory=dict)


def tool(name: str) -> Optional[str]:
    """cuobjdump/nvdisasm/ptxas: Triton's bundled copy first (matches the ptxas that built the
    cubin), then the CUDA toolkit, then PATH."""
    cands = []
    try:
        import triton

        cands.append(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name)
    except ImportError:
        pass
    from .._extension import find_cuda_home

    home, _ = find_cuda_home()
    if home is not None:
        cands.append(Path(home) / "bin" / name)
    for c in cands:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    return shutil.which(name)


def triton_ptxas() -> Optional[str]:
    """The ptxas Triton's NVIDIA backend runs for sm_90 (newer Triton picks one per architecture)."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas
    except ImportError:
        return tool("ptxas")
    try:
        return get_ptxas(90).path
    except TypeError:
        return get_ptxas().path


def _run_on_cubin(name: str, args: List[str], cubin: bytes) -> str:
    """The stdout of tool `name` run with `args` on the cubin (written to a temporary file)."""
    exe = tool(name)
    if exe is None:
        raise RuntimeError(f"{name} was not found (Triton's nvidia backend or a CUDA toolkit has it)")
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "k.cubin")
        Path(p).write_bytes(cubin)
        return subprocess.run([exe, *args, p], check=True, capture_output=True, text=True).stdout


def resource_usage(cubin: bytes) -> Dict[str, Dict[str, int]]:
    """{function: {"REG": .., "STACK": .., "SHARED": .., "LOCAL": ..}} from cuobjdump -res-usage."""
    out = _run_on_cubin("cuobjdump", ["-res-usage"], cubin)
    res = {}
    for line in out.splitlines():
        m = _RES.search(line)
        if m:
            fields = dict(kv.split(":", 1) for kv in m.group(2).split() if ":" in kv)
            res[m.group(1)] = {k: int(v) for k, v in fields.items() if v.isdigit()}
        elif res and "REG:" in line:  # the resource line follows the function line
            last = list(res)[-1]
            fields = dict(kv.split(":", 1) for kv in line.split() if ":" in kv)
            res[last].update({k: int(v) for k, v in fields.items() if v.isdigit()})
    return res


def disassemble(cubin: bytes, function: Optional[str] = None) -> Dict[str, Sass]:
    """{function: Sass} of every function of the cubin (or of `function` only)."""
    return parse_sass(_run_on_cubin("nvdisasm", ["-c", "-gi"], cubin), function)


def parse_sass(text: str, function: Optional[str] = None) -> Dict[str, Sass]:
    funcs: Dict[str, List[Instr]] = {}
    labels: Dict[str, Dict[str, int]] = {}
    cur = None
    pending_labels: List[str] = []
    lines: FrozenSet[Tuple[str, int]] = frozenset()
    new_block = True
    acc: set = set()
    for raw in text.splitlines():
        s = raw.strip()
        m = re.match(r"^\.text\.(\S+):$", s)
        if m:
            cur = m.group(1)
            funcs[cur], labels[cur] = [], {}
            lines, acc, new_block = frozenset(), set(), True
            continue
        if cur is None:
            continue
        if s.startswith("//##"):
            if new_block:
                acc, new_block = set(), False
            acc.update((f, int(n)) for f, n in _FILE_LINE.findall(s))
            lines = frozenset(acc)
            continue
        lm = _LABEL.match(s)
        if lm:
            pending_labels.append(lm.group(1))
            continue
        im = _INSTR.match(raw)
        if im:
            new_block = True
            addr = int(im.group(1), 16)
            body = im.group(2).strip()
            if body.startswith("@"):
                body = body.split(None, 1)[1] if " " in body else ""
            parts = body.split(None, 1)
            op = parts[0] if parts else ""
            funcs[cur].append(Instr(addr, op, parts[1] if len(parts) > 1 else "", lines))
            for lab in pending_labels:
                labels[cur][lab] = addr
            pending_labels = []
    out = {}
    for name, instrs in funcs.items():
        if function is not None and name != function:
            continue
        loops = []
        for ins in instrs:
            if ins.base != "BRA":
                continue
            t = _TARGET.search(ins.operands)
            if not t or t.group(1) not in labels[name]:
                continue
            target = labels[name][t.group(1)]
            if target == ins.addr:
                continue  # the trap after EXIT
            if target < ins.addr:
                loops.append(Loop(target, ins.addr))
        out[name] = Sass(instrs, loops)
    return out


def loop_lines(sass: Sass, loop: Loop) -> List[FrozenSet[Tuple[str, int]]]:
    """The source-line sets of the instructions directly in `loop` (not in a loop nested in it)."""
    inner = [o for o in sass.loops if o is not loop and loop.contains(o.start) and loop.contains(o.end)]
    return [i.lines for i in sass.instrs
            if loop.contains(i.addr) and not any(o.contains(i.addr) for o in inner)]


def weight(sass: Sass, addr: int) -> float:
    """How many times one thread executes the instruction at `addr` (product of loop trips)."""
    w = sass.shares.get(addr, 1.0)
    for lp in sass.loops:
        if lp.contains(addr):
            w *= lp.trips if lp.trips is not None else 1.0
    return w


def executed(sass: Sass, pred: Callable[[Instr], bool] = lambda i: True) -> float:
    return sum(weight(sass, i.addr) for i in sass.instrs if pred(i))


_WIDTH = {"U8": 1, "S8": 1, "U16": 2, "S16": 2, "64": 8, "128": 16}


def _access_bytes(opcode: str) -> int:
    for mod in opcode.split(".")[1:]:
        if mod in _WIDTH:
            return _WIDTH[mod]
    return 4


def spill_bytes(sass: Sass) -> Tuple[int, int]:
    """(spill store bytes, spill load bytes): static widths of STL / LDL, as ptxas -v counts."""
    st = sum(_access_bytes(i.opcode) for i in sass.instrs if i.base == "STL")
    ld = sum(_access_bytes(i.opcode) for i in sass.instrs if i.base == "LDL")
    return st, ld


def summary(sass: Sass) -> Dict[str, float]:
    """Static and executed (per thread) instruction counts of the classes the model uses."""
    real = [i for i in sass.instrs if i.base not in ("NOP",)]
    s = Sass(real, sass.loops, sass.shares)
    is_mufu = lambda i: i.base == "MUFU"  # noqa: E731
    is_fp64 = lambda i: i.base in ("DADD", "DMUL", "DFMA", "DSETP", "DMNMX")  # noqa: E731
    is_mem = lambda i: i.base in ("LDG", "STG", "LD", "ST", "LDS", "STS", "LDL", "STL", "RED", "ATOM")  # noqa: E731
    return {
        "static": len(real),
        "static_mufu": sum(1 for i in real if is_mufu(i)),
        "static_in_loops": sum(1 for i in real if any(lp.contains(i.addr) for lp in sass.loops)),
        "executed": executed(s),
        "executed_mufu": executed(s, is_mufu),
        "executed_fp64": executed(s, is_fp64),
        "executed_mem": executed(s, is_mem),
        "executed_shared": executed(s, lambda i: i.base in ("LDS", "STS")),
        "executed_bar": executed(s, lambda i: i.base == "BAR"),
        "loops": len(sass.loops),
    }
