"""Fault injection on the C++ extension's JIT cache (ocr_kernels/_extension.py), in subprocesses
with their own OCR_KERNELS_BUILD_DIR: a build killed half-way, a truncated or emptied library,
four processes making their first call at once (as DDP ranks do), a build that another live
process holds. None may hang, crash, or load an unverified library.

One real build runs here (after a build killed half-way: cpp_extension's own lock file is left
behind). The other cases swap the compiler for a copy of the library this test process loaded
(the suite builds it anyway), which exercises the lock, the detection, the set-aside and the
publish without more minutes of compiling.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ocr_kernels._extension import (EXT_NAME, _build_dir, cuda_build_possible, csrc_dir,
                                    extension_unavailable_reason, load, sources)

ROOT = Path(__file__).resolve().parent.parent
BUILD_TIMEOUT = 900  # a cold build on a busy 2-core CI machine

pytestmark = pytest.mark.skipif(
    csrc_dir() is None or shutil.which(os.environ.get("CXX", "c++")) is None,
    reason="needs the csrc/ sources and a C++ compiler")

# One call of the explicit cpu backend checked against the reference; prints the library it used.
FIRST_CALL = """
import torch, ocr_kernels as ok
from ocr_kernels import _extension
x = torch.randn(2, 4, 3, 5, generator=torch.Generator().manual_seed(0))
t = torch.tensor([[1, 0, 0], [0, 1, 1]])
got = ok.ocr_loss(x, t, group_split="max", pixels="all", backend="cpu")
want = ok.ocr_loss(x, t, group_split="max", pixels="all", backend="reference")
torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
print("LOADED", _extension._loaded)
"""

# The same call with the compiler replaced by a copy of a good library (GOOD_LIBRARY), which
# takes FAKE_BUILD_SECONDS.
FAKE_COMPILE = """
import os, shutil, time, torch
from ocr_kernels import _extension
def _copy(build_dir, srcs, with_cuda, verbose):
    time.sleep(float(os.environ.get("FAKE_BUILD_SECONDS", "0")))
    lib = build_dir / (_extension.EXT_NAME + ".so")
    shutil.copyfile(os.environ["GOOD_LIBRARY"], lib)
    torch.ops.load_library(str(lib))
    return lib
_extension._compile = _copy
""" + FIRST_CALL
BUILDING = "building the C++ extension once"


@pytest.fixture(scope="module")
def good_library():
    reason = extension_unavailable_reason("cpu")
    if reason is not None:
        pytest.skip(f"the C++ extension cannot be built here: {reason}")
    return Path(load())


def env_for(build_dir, **extra):
    env = dict(os.environ, OCR_KERNELS_BUILD_DIR=str(build_dir), PYTHONPATH=str(ROOT), **extra)
    env.pop("TRITON_INTERPRET", None)
    return env


def published(build_dir) -> Path:
    """The folder the current sources' library is published in, under build_dir."""
    with_cuda = cuda_build_possible()
    old = os.environ.get("OCR_KERNELS_BUILD_DIR")
    os.environ["OCR_KERNELS_BUILD_DIR"] = str(build_dir)
    try:
        return _build_dir(sources(with_cuda=with_cuda), with_cuda)
    finally:
        if old is None:
            del os.environ["OCR_KERNELS_BUILD_DIR"]
        else:
            os.environ["OCR_KERNELS_BUILD_DIR"] = old


def run(script, build_dir, timeout, **extra):
    return subprocess.run([sys.executable, "-c", script], env=env_for(build_dir, **extra),
                          capture_output=True, text=True, timeout=timeout, cwd=str(build_dir))


def test_concurrent_first_calls_build_once(tmp_path, good_library):
    cache = tmp_path / "cache"
    cache.mkdir()
    env = env_for(cache, GOOD_LIBRARY=str(good_library), FAKE_BUILD_SECONDS="5")
    procs = [subprocess.Popen([sys.executable, "-c", FAKE_COMPILE], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=str(cache)) for _ in range(4)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, out + err
    errs = "".join(err for _, err in outs)
    assert errs.count(BUILDING) == 1, errs  # one process built, the others waited for it
    assert "waiting for pid" in errs, errs
    final = published(cache)
    lib = final / f"{EXT_NAME}.so"
    assert all(f"LOADED {lib}" in out for out, _ in outs), outs
    assert sorted(p.name for p in cache.iterdir()) == sorted([final.name, final.name + ".lock"])


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_a_corrupt_library_is_set_aside_and_rebuilt(tmp_path, good_library, damage):
    cache = tmp_path / "cache"
    cache.mkdir()
    res = run(FAKE_COMPILE, cache, 300, GOOD_LIBRARY=str(good_library))
    assert res.returncode == 0, res.stdout + res.stderr
    lib = published(cache) / f"{EXT_NAME}.so"
    size = lib.stat().st_size
    with open(lib, "r+b") as f:
        f.truncate(size // 2 if damage == "truncated" else 0)
    res = run(FAKE_COMPILE, cache, 300, GOOD_LIBRARY=str(good_library))
    # SIGBUS (-7) was the failure: dlopen of a truncated file mapped past its end
    assert res.returncode == 0, f"rc={res.returncode}\n{res.stdout}{res.stderr}"
    assert "incomplete or corrupt" in res.stderr and BUILDING in res.stderr, res.stderr
    assert lib.stat().st_size == size
    # the rebuilt library is published: the next process loads it without building
    res = run(FIRST_CALL, cache, 300)
    assert res.returncode == 0 and "building" not in res.stderr, res.stdout + res.stderr


def test_a_build_killed_half_way_leaves_nothing_that_blocks_the_next_run(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    p = subprocess.Popen([sys.executable, "-c", FIRST_CALL], env=env_for(cache),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=str(cache),
                         start_new_session=True)
    deadline = time.monotonic() + 300
    # cpp_extension's own lock file exists from the start of the build to its end
    while not any(f.name == "lock" for f in cache.rglob("lock")):
        assert p.poll() is None and time.monotonic() < deadline, "the build never started"
        time.sleep(0.2)
    time.sleep(2)  # inside the compiler now
    os.killpg(p.pid, signal.SIGKILL)  # a scheduler's kill: python, ninja and the compilers
    p.wait()
    res = run(FIRST_CALL, cache, BUILD_TIMEOUT)
    assert res.returncode == 0, res.stdout + res.stderr
    final = published(cache)
    assert f"LOADED {final / EXT_NAME}.so" in res.stdout and BUILDING in res.stderr
    # the killed process's private build folder was cleared
    assert not list(cache.glob("*.build-*")), list(cache.iterdir())


WAIT_THEN_FALL_BACK = """
import warnings, torch, ocr_kernels as ok
x = torch.randn(1, 3, 2, 2)
t = torch.tensor([[1, 0]])
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    a = ok.ocr_loss(x, t, group_split="max")  # auto: waits, gives up, warns, falls back
    b = ok.ocr_loss(x, t, group_split="max")  # no second wait, no second warning
torch.testing.assert_close(a, ok.ocr_loss(x, t, group_split="max", backend="reference"))
w = [x for x in w if "falls back" in str(x.message)]
print("WARNINGS", len(w), w[0].message if w else "")
try:
    ok.ocr_loss(x, t, group_split="max", backend="cpu")
except ok.BackendUnavailableError as exc:
    print("RAISED", exc)
"""


def test_a_live_build_is_waited_for_with_a_limit_and_a_message(tmp_path):
    import fcntl

    cache = tmp_path / "cache"
    cache.mkdir()
    final = published(cache)
    lock = final.with_name(final.name + ".lock")
    with open(lock, "w") as f:  # this process plays the live build
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(f"pid {os.getpid()} on {socket.gethostname()} since now")
        f.flush()
        t0 = time.monotonic()
        res = run(WAIT_THEN_FALL_BACK, cache, 120, OCR_KERNELS_BUILD_TIMEOUT="3")
        elapsed = time.monotonic() - t0
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"waiting for pid {os.getpid()}" in res.stderr, res.stderr
    assert res.stderr.count("waiting for") == 1, res.stderr
    assert "WARNINGS 1" in res.stdout and "timed out after 3 s" in res.stdout, res.stdout
    assert "OCR_KERNELS_BUILD_TIMEOUT" in res.stdout, res.stdout
    assert "RAISED backend='cpu'" in res.stdout and "timed out" in res.stdout, res.stdout
    assert elapsed < 60
    assert not final.exists()  # nothing was built behind the holder's back
