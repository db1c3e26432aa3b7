"""setuptools glue; the metadata lives in pyproject.toml.

- csrc/ ships inside the package as ``ocr_kernels/csrc`` (package data), so that a normal
  (non-editable) install can still build the extension on first use.
- ``OCR_KERNELS_BUILD_EXT=1`` builds the extension ahead of time, as ``ocr_kernels/_C*.so``
  (with the CUDA kernels when torch has CUDA and nvcc is found). It needs torch at build time:
  ``OCR_KERNELS_BUILD_EXT=1 pip install --no-build-isolation .``
"""
import os
import sys
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent
CSRC_PATTERNS = ["*.h", "*.cpp", "cpu/*.h", "cpu/*.cpp", "cuda/*.h", "cuda/*.cuh", "cuda/*.cu",
                 "cuda/*.cpp"]


def extension_kwargs():
    if os.environ.get("OCR_KERNELS_BUILD_EXT", "0") != "1":
        return {}
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    sys.path.insert(0, str(ROOT))
    from ocr_kernels._extension import _use_cuda_home, cflags, cuda_build_possible, cuda_cflags, sources

    with_cuda = cuda_build_possible()
    if with_cuda:
        _use_cuda_home()
    srcs = [os.path.relpath(s, ROOT) for s in sources(ROOT / "csrc", with_cuda)]
    make = CUDAExtension if with_cuda else CppExtension
    ext = make(
        "ocr_kernels._C",
        srcs,
        include_dirs=[str(ROOT / "csrc")],
        extra_compile_args={"cxx": cflags(), "nvcc": cuda_cflags()},
        extra_link_args=["-fopenmp"],
    )
    return {"ext_modules": [ext], "cmdclass": {"build_ext": BuildExtension}}


setup(
    packages=find_packages(include=["ocr_kernels", "ocr_kernels.*"]) + ["ocr_kernels.csrc"],
    package_dir={"ocr_kernels.csrc": "csrc"},
    package_data={"ocr_kernels.csrc": CSRC_PATTERNS},
    **extension_kwargs(),
)
