"""Build script. The package itself is pure Python; the C++/CUDA extension is optional (csrc/).

Environment: QLAB_FUSED_NO_EXT=1 skips all compilation.
"""
import os

from setuptools import setup

setup(
    packages=["qlab_fused", "qlab_fused.backends", "qlab_fused.kernels"],
    package_dir={"qlab_fused.kernels": "kernels"},
)
