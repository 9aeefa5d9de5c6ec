"""Build script. The package itself is pure Python; the C++/CUDA extension ``qlab_fused._C`` is
optional (csrc/) and the package falls back to the torch backend without it.

    pip install --no-build-isolation --no-deps -e .

Environment:
    QLAB_FUSED_NO_EXT=1       skip all compilation (pure-Python install)
    QLAB_FUSED_FORCE_CUDA=1   add the CUDA sources even if torch has no CUDA or nvcc is not found
    TORCH_CUDA_ARCH_LIST      CUDA architectures (read by torch.utils.cpp_extension)
    MAX_JOBS                  parallel compile jobs (read by torch.utils.cpp_extension / ninja)
The CPU extension is built whenever a C++ compiler is found.
"""
import glob
import os
import shutil
import sys

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _flag(name):
    return os.environ.get(name, "0").strip().lower() in ("1", "true", "yes", "on")


def _have_cxx():
    cxx = os.environ.get("CXX")
    return any(shutil.which(c) for c in ([cxx] if cxx else ["c++", "g++", "clang++"]))


def _extensions():
    """([extension], cmdclass); both empty when nothing is to be built."""
    if _flag("QLAB_FUSED_NO_EXT") or not _have_cxx():
        return [], {}
    import torch
    from torch.utils import cpp_extension

    rel = lambda paths: sorted(os.path.relpath(p, HERE) for p in paths)  # noqa: E731
    sources = rel([os.path.join(HERE, "csrc", "ops.cpp")]
                  + glob.glob(os.path.join(HERE, "csrc", "cpu", "*.cpp")))
    cuda_sources = rel(glob.glob(os.path.join(HERE, "csrc", "cuda", "*.cu"))
                       + glob.glob(os.path.join(HERE, "csrc", "cuda", "*.cpp")))
    with_cuda = _flag("QLAB_FUSED_FORCE_CUDA") or (
        torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None)

    # -ffp-contract=off: the same fp32 operations (no fused multiply-add) in the vector body, the
    # scalar tail and every ISA build, so results do not depend on where an element falls.
    # OpenMP: at::parallel_for is an inline OpenMP region, compiled into this extension.
    cxx = ["-O3", "-ffp-contract=off", "-Wno-psabi"]
    link = []
    if sys.platform != "darwin":
        cxx.append("-fopenmp")
        link.append("-fopenmp")
    kwargs = dict(extra_link_args=link, include_dirs=[os.path.join(HERE, "csrc")])
    if with_cuda:
        nvcc = ["-O3", "--fmad=false", "-lineinfo"]
        ext = cpp_extension.CUDAExtension(
            "qlab_fused._C", sources + cuda_sources,
            extra_compile_args={"cxx": cxx + ["-DQLAB_WITH_CUDA"], "nvcc": nvcc}, **kwargs)
    else:
        ext = cpp_extension.CppExtension("qlab_fused._C", sources,
                                         extra_compile_args={"cxx": cxx}, **kwargs)
    build_ext = cpp_extension.BuildExtension.with_options(use_ninja=shutil.which("ninja") is not None)
    return [ext], {"build_ext": build_ext}


ext_modules, cmdclass = _extensions()

setup(
    packages=["qlab_fused", "qlab_fused.backends", "qlab_fused.benchmarking", "qlab_fused.kernels"],
    package_dir={"qlab_fused.kernels": "kernels"},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
