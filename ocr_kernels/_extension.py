"""Building and loading the C++/CUDA extension (csrc/).

The extension is one shared library, ``ocr_kernels_C``, with every op of the ``ocr_kernels``
namespace (schemas in csrc/ops.cpp, CPU kernels in csrc/cpu/*.cpp, CUDA kernels in csrc/cuda/*.cu
with their bindings in csrc/cuda/*.cpp). It comes from, in order:

1. an ahead-of-time build made at install time (``OCR_KERNELS_BUILD_EXT=1 pip install
   --no-build-isolation .``), found as ``ocr_kernels/_C*.so``;
2. a JIT build through ``torch.utils.cpp_extension.load`` (ninja), made on first use and cached
   under ``$OCR_KERNELS_BUILD_DIR`` (default ``~/.cache/ocr_kernels``) in a folder keyed by the
   sources' hash and the torch/Python/CUDA versions, so later processes load it in a second.
   ``python -m ocr_kernels.build_ext`` builds it ahead of the first use.

Sources are discovered by glob, so new kernel files are built without editing this module. Nothing
here runs at import time: without a toolchain the package imports and "auto" falls back to the
reference; an explicit backend="cpu"/"cuda" raises with the reason.
"""
from __future__ import annotations

import functools
import glob
import hashlib
import os
import re
import shutil
import socket
import sys
import sysconfig
import threading
import time
import uuid
from pathlib import Path
from typing import List, Optional, Tuple

import torch

EXT_NAME = "ocr_kernels_C"
_PKG_DIR = Path(__file__).resolve().parent

_lock = threading.RLock()
_loaded: Optional[str] = None  # path of the loaded library
_load_error: Optional[str] = None  # why building/loading failed (kept: we do not retry)


def csrc_dir() -> Optional[Path]:
    """The csrc/ tree: shipped inside the package (ocr_kernels/csrc) or beside it (a checkout)."""
    for d in (_PKG_DIR / "csrc", _PKG_DIR.parent / "csrc"):
        if (d / "ops.cpp").is_file():
            return d
    return None


def _is_cuda_home(d: Optional[str]) -> bool:
    return bool(d) and Path(d, "bin", "nvcc").is_file() and Path(d, "include", "cuda_runtime.h").is_file()


def _nvcc_behind(path: str) -> Optional[str]:
    """The real nvcc behind `path`: through symlinks, and through a wrapper script that execs a
    toolkit's nvcc by absolute path (``exec /usr/local/cuda-13.0/bin/nvcc "$@"``)."""
    for _ in range(4):
        real = os.path.realpath(path)
        try:
            with open(real, "rb") as f:
                head = f.read(4096)
        except OSError:
            return None
        if not head.startswith(b"#!"):
            return real
        m = re.search(rb"(/[^\s\"']+/bin/nvcc)\b", head)
        if m is None:
            return None
        path = m.group(1).decode()
    return None


@functools.lru_cache(maxsize=None)
def find_cuda_home() -> Tuple[Optional[str], str]:
    """(the CUDA toolkit folder, how it was found) or (None, what was tried).

    A toolkit folder has bin/nvcc AND include/cuda_runtime.h: torch's own guess takes the parent
    of the `nvcc` on PATH, which for a wrapper script outside the toolkit holds no CUDA headers.
    Tried in order: $CUDA_HOME, $CUDA_PATH, the real path of `nvcc` on PATH (through symlinks and
    wrapper scripts), /usr/local/cuda, /usr/local/cuda-* (newest first).
    """
    tried = []
    for var in ("CUDA_HOME", "CUDA_PATH"):
        d = os.environ.get(var)
        if d:
            if _is_cuda_home(d):
                return d, f"${var}"
            tried.append(f"${var}={d} (no bin/nvcc + include/cuda_runtime.h)")
    nvcc = shutil.which("nvcc")
    if nvcc:
        real = _nvcc_behind(nvcc)
        d = str(Path(real).parent.parent) if real else None
        if d and _is_cuda_home(d):
            return d, f"nvcc on PATH ({nvcc} -> {real})"
        tried.append(f"nvcc on PATH ({nvcc} -> {real or 'unresolved'})")
    else:
        tried.append("nvcc on PATH (none)")

    def version_key(p: str):
        return [int(v) for v in re.findall(r"\d+", Path(p).name)]

    for d in ["/usr/local/cuda"] + sorted(glob.glob("/usr/local/cuda-*"), key=version_key, reverse=True):
        if _is_cuda_home(d):
            return d, d
        tried.append(d)
    return None, "not found; tried " + ", ".join(tried)


def cuda_build_possible() -> bool:
    """True when this torch has CUDA and a CUDA toolkit (nvcc and its headers) is found; the
    build then points torch at it (see _use_cuda_home)."""
    return torch.version.cuda is not None and find_cuda_home()[0] is not None


def cuda_arch_list() -> str:
    """The architectures the CUDA kernels are built for when no GPU is visible to pick one: A100
    and H100/H200 machine code (TORCH_CUDA_ARCH_LIST overrides)."""
    return os.environ.get("TORCH_CUDA_ARCH_LIST") or "8.0;9.0"


def _use_cuda_home() -> None:
    """Point torch.utils.cpp_extension at the toolkit find_cuda_home found (it caches its own
    guess at import, which may be a wrapper's prefix without headers)."""
    import torch.utils.cpp_extension as ce

    home, _ = find_cuda_home()
    if home is None:
        return
    os.environ["CUDA_HOME"] = home
    ce.CUDA_HOME = home
    if not torch.cuda.is_available() and "TORCH_CUDA_ARCH_LIST" not in os.environ:
        os.environ["TORCH_CUDA_ARCH_LIST"] = cuda_arch_list()


def sources(root: Optional[Path] = None, with_cuda: Optional[bool] = None) -> List[str]:
    """Every translation unit of the extension (sorted, so the build is reproducible)."""
    root = root or csrc_dir()
    if root is None:
        return []
    if with_cuda is None:
        with_cuda = cuda_build_possible()
    pats = ["*.cpp", "cpu/*.cpp"] + (["cuda/*.cu", "cuda/*.cpp"] if with_cuda else [])
    return sorted({p for pat in pats for p in glob.glob(str(root / pat))})


def _compiler() -> Optional[str]:
    cxx = os.environ.get("CXX", "c++")
    return shutil.which(cxx) or shutil.which("g++") or shutil.which("clang++")


def cflags() -> List[str]:
    # -fopenmp: at::parallel_for is a header template that only runs in parallel when the including
    # translation unit is compiled with OpenMP. -fno-trapping-math/-fno-math-errno let GCC turn the
    # selects of the CPU tile loops into blends and vectorise them (we never read FP flags/errno);
    # no -ffast-math: the kernels rely on IEEE infinities and exact rounding tricks.
    return ["-O3", "-fopenmp", "-fno-trapping-math", "-fno-math-errno"]


def cuda_cflags() -> List[str]:
    return ["-O3", "--use_fast_math", "-lineinfo"]


def _build_dir(srcs: List[str], with_cuda: bool) -> Path:
    h = hashlib.sha256()
    for flag in (torch.__version__, str(torch.version.cuda), sys.version, sysconfig.get_platform(),
                 " ".join(cflags()), " ".join(cuda_cflags()) + cuda_arch_list() if with_cuda else ""):
        h.update(flag.encode())
    root = csrc_dir()
    headers = sorted(glob.glob(str(root / "**" / "*.h"), recursive=True)) if root else []
    for f in sorted(set(srcs) | set(headers)):
        h.update(os.path.relpath(f, root).encode())
        h.update(Path(f).read_bytes())
    base = Path(os.environ.get("OCR_KERNELS_BUILD_DIR", Path.home() / ".cache" / "ocr_kernels"))
    tag = f"py{sys.version_info.major}{sys.version_info.minor}-torch{torch.__version__}"
    tag += f"-cu{torch.version.cuda}" if with_cuda else "-cpu"
    return base / f"{tag}-{h.hexdigest()[:16]}"


@functools.lru_cache(maxsize=None)
def _jit_target() -> Optional[Path]:
    """Where the JIT build of the current sources is published (built or not); None without
    sources."""
    if csrc_dir() is None:
        return None
    with_cuda = cuda_build_possible()
    return _build_dir(sources(with_cuda=with_cuda), with_cuda) / f"{EXT_NAME}.so"


def _stamp_path(lib: Path) -> Path:
    return lib.with_name(lib.name + ".sha256")


def _digest(lib: Path) -> str:
    h = hashlib.sha256()
    with open(lib, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return f"{h.hexdigest()} {lib.stat().st_size}"


def _verified(lib: Path) -> bool:
    """The library is the one a finished build wrote: its stamp (written after the build
    succeeded and the library loaded) matches the file's size and SHA-256. Checked before every
    dlopen: mapping a truncated library would kill the process with SIGBUS."""
    try:
        stamp = _stamp_path(lib).read_text().strip()
        size = int(stamp.split()[1])
        return lib.stat().st_size == size and _digest(lib) == stamp
    except (OSError, ValueError, IndexError):
        return False


def _cached_library() -> Optional[Path]:
    """A finished, verified JIT build of exactly these sources, flags and versions (loadable
    without a compiler or ninja)."""
    lib = _jit_target()
    return lib if lib is not None and lib.is_file() and _verified(lib) else None


def _prebuilt() -> Optional[Path]:
    found = sorted(_PKG_DIR.glob("_C*.so")) + sorted(_PKG_DIR.glob("_C*.pyd"))
    return found[0] if found else None


def extension_unavailable_reason(backend: str) -> Optional[str]:
    """Why backend "cpu"/"cuda" cannot run in this process (None: built, or buildable on first use).

    Cheap: looks for the library or the toolchain; the build itself happens on first use.
    """
    if _load_error is not None:
        return _load_error
    if backend == "cuda":
        if torch.version.cuda is None:
            return "this torch build has no CUDA (torch.version.cuda is None)"
        if _loaded is not None:
            return None if _has_cuda_kernels() else "the extension was built without its CUDA kernels"
        prebuilt = _prebuilt()
        if prebuilt is not None:
            return None
        if not cuda_build_possible():
            return (f"no CUDA toolkit (bin/nvcc and include/cuda_runtime.h) was found, so the CUDA "
                    f"kernels cannot be built: {find_cuda_home()[1]}")
    if _loaded is not None or _prebuilt() is not None or _cached_library() is not None:
        return None
    if csrc_dir() is None:
        return "the csrc/ sources are not installed with the package, so it cannot be built"
    if _compiler() is None:
        return "no C++ compiler was found (set CXX or install g++) to build the extension"
    from torch.utils.cpp_extension import is_ninja_available

    if not is_ninja_available():
        return "ninja was not found (pip install ninja) to build the extension"
    return None


def extension_ops() -> List[str]:
    """The ops csrc/ops.cpp declares (its m.def schemas), as "ocr_kernels::name"."""
    root = csrc_dir()
    if root is None:
        return []
    text = (root / "ops.cpp").read_text()
    return [f"ocr_kernels::{n}" for n in re.findall(r'm\.def\(\s*"(\w+)\(', text)]


# Ops with a CPU kernel only: the one-op W-OoD loss and its backward (latency-bound on a CPU;
# CUDA runs the distance ops) and the GEMM K-means step (CUDA assigns with wood_assign), by
# design.
CPU_ONLY_OPS = ("ocr_kernels::wood_loss", "ocr_kernels::wood_loss_backward",
                "ocr_kernels::wood_kmeans_step")


# Ops with a CUDA kernel only: the seg objective's one-pass forward and gradient (the CPU seg path
# runs the maps ops; its per-thread code runs on the CPU through the test hook
# _pixelwise_seg_objective).
CUDA_ONLY_OPS = ("ocr_kernels::seg_ocr_objective",)


def missing_kernels(dispatch_key: str) -> List[str]:
    """The public ops (csrc/ops.cpp's, less the "_"-prefixed internal ones such as the CPU-only
    test hooks _pixelwise_seg_ocr and _pixelwise_seg_objective, less CPU_ONLY_OPS for other keys
    and CUDA_ONLY_OPS for "CPU") with no kernel registered for `dispatch_key` ("CPU", "CUDA") in
    this process (load() first)."""
    return [op for op in extension_ops() if not op.split("::")[1].startswith("_")
            and not (dispatch_key != "CPU" and op in CPU_ONLY_OPS)
            and not (dispatch_key == "CPU" and op in CUDA_ONLY_OPS)
            and not torch._C._dispatch_has_kernel_for_dispatch_key(op, dispatch_key)]


def _has_cuda_kernels() -> bool:
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key("ocr_kernels::ocr_loss_map", "CUDA")
    except Exception:
        return False


def load(verbose: bool = False) -> str:
    """Load the extension, building it first when needed; returns the library's path.

    Raises RuntimeError with the reason when it cannot be built or loaded (and remembers it, so
    that "auto" falls back from then on).
    """
    global _loaded, _load_error
    if _loaded is not None:
        return _loaded
    with _lock:
        if _loaded is not None:
            return _loaded
        if _load_error is not None:
            raise RuntimeError(_load_error)
        try:
            prebuilt = _prebuilt()
            if prebuilt is not None:
                torch.ops.load_library(str(prebuilt))
                _loaded = str(prebuilt)
            else:
                _loaded = _jit_build(verbose)
        except Exception as exc:
            fix = "" if isinstance(exc, TimeoutError) else (
                "; `python -m ocr_kernels.build_ext --verbose` builds it again and shows the "
                "compiler's output")
            _load_error = (f"building/loading the C++ extension failed: {type(exc).__name__}: "
                           f"{exc}{fix}")
            raise RuntimeError(_load_error) from exc
        return _loaded


_registrars_done: set = set()


def registered_ops(register):
    """torch.ops.ocr_kernels with the extension loaded and `register` -- a module's Python-side
    registrations (register_fake/register_autograd) of its C++ ops -- run exactly once."""
    if register not in _registrars_done:
        load()
        with _lock:
            if register not in _registrars_done:
                register()
                _registrars_done.add(register)
    return torch.ops.ocr_kernels


def build_timeout() -> float:
    """Seconds a process waits for another process's build of the same library
    (``OCR_KERNELS_BUILD_TIMEOUT``, default 900)."""
    try:
        return float(os.environ.get("OCR_KERNELS_BUILD_TIMEOUT", "900"))
    except ValueError:
        return 900.0


class _BuildLock:
    """An exclusive ``flock`` on ``<build dir>.lock``, held while a process checks, builds and
    publishes the library. The kernel drops it when its holder dies (Ctrl-C, SIGKILL, OOM kill),
    so a killed build never leaves a lock behind; the holder's pid, host and start time are written
    into the file for the message of a process that waits. Where ``fcntl`` is missing (Windows)
    there is no lock: private build folders and the atomic publish still keep the cache whole."""

    def __init__(self, path: Path, timeout: float):
        self.path, self.timeout, self.fd = path, timeout, None

    def _owner(self) -> str:
        try:
            text = self.path.read_text().strip()
        except OSError:
            text = ""
        return text or "another process"

    def __enter__(self):
        try:
            import fcntl
        except ImportError:
            return self
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout
        told = False
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                pass
            if not told:
                print(f"ocr-kernels: waiting for {self._owner()} to finish building the C++ "
                      f"extension in {self.path.with_suffix('')} (giving up after "
                      f"{self.timeout:.0f} s; OCR_KERNELS_BUILD_TIMEOUT changes that)",
                      file=sys.stderr, flush=True)
                told = True
            if time.monotonic() >= deadline:
                owner = self._owner()
                os.close(self.fd)
                self.fd = None
                raise TimeoutError(
                    f"timed out after {self.timeout:.0f} s waiting for {owner} to finish building "
                    f"the C++ extension (lock {self.path}); let that build finish, or raise "
                    f"OCR_KERNELS_BUILD_TIMEOUT, or prebuild with `python -m ocr_kernels.build_ext`")
            time.sleep(0.2)
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                           f"{time.strftime('%Y-%m-%d %H:%M:%S')}".encode(), 0)
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None


def _discard(path: Path) -> None:
    """Remove a folder that no process uses any more: renamed aside first (atomic), so no
    process ever sees it half-deleted under the published name."""
    aside = path.with_name(f"{path.name}.discard-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    shutil.rmtree(aside, ignore_errors=True)


def _compile(build_dir: Path, srcs: List[str], with_cuda: bool, verbose: bool) -> Path:
    """Compile and link the library into build_dir (private to this process) and load it."""
    from torch.utils.cpp_extension import load as cpp_load

    if with_cuda:
        _use_cuda_home()
    cpp_load(
        name=EXT_NAME,
        sources=srcs,
        extra_cflags=cflags(),
        extra_cuda_cflags=cuda_cflags(),
        extra_ldflags=["-fopenmp"],
        extra_include_paths=[str(csrc_dir())],
        build_directory=str(build_dir),
        with_cuda=with_cuda,
        is_python_module=False,
        verbose=verbose,
    )
    return build_dir / f"{EXT_NAME}.so"


def _jit_build(verbose: bool) -> str:
    """Load the cached library, building and publishing it first when there is no verified one.

    The build runs in a folder private to this process and is published by one atomic rename of
    that folder, after the library loaded and its stamp (size and SHA-256) was written: other
    processes see either nothing or a finished library. One process builds at a time (a lock
    with a timeout); a library that fails its check (truncated, emptied, half-copied) is set
    aside and rebuilt, never loaded."""
    reason = extension_unavailable_reason("cpu")
    if reason is not None:
        raise RuntimeError(reason)
    cached = _cached_library()
    if cached is not None:  # the build directory's name is the hash of what went into it
        torch.ops.load_library(str(cached))
        return str(cached)
    with_cuda = cuda_build_possible()
    srcs = sources(with_cuda=with_cuda)
    final = _build_dir(srcs, with_cuda)
    final.parent.mkdir(parents=True, exist_ok=True)
    lib = final / f"{EXT_NAME}.so"
    with _BuildLock(final.with_name(final.name + ".lock"), build_timeout()):
        if lib.is_file() and _verified(lib):  # another process published it while we waited
            torch.ops.load_library(str(lib))
            return str(lib)
        if final.exists():
            print(f"ocr-kernels: the cached C++ extension in {final} is incomplete or corrupt "
                  "(its size or SHA-256 does not match the stamp of a finished build); rebuilding",
                  file=sys.stderr, flush=True)
            _discard(final)
        # Holding the lock, no other process is building: private folders left here were
        # abandoned by killed builds.
        for stale in final.parent.glob(glob.escape(final.name) + ".build-*"):
            _discard(stale)
        private = final.with_name(
            f"{final.name}.build-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        private.mkdir()
        print(f"ocr-kernels: building the C++{'/CUDA' if with_cuda else ''} extension once "
              f"(about a minute) in {final}", file=sys.stderr, flush=True)
        try:
            built = _compile(private, srcs, with_cuda, verbose)
            _stamp_path(built).write_text(_digest(built) + "\n")
            os.rename(private, final)
        except BaseException:
            _discard(private)
            raise
    return str(lib)
