"""Builds the collapsed engine's C kernel; everything else is in pyproject.toml.

The extension is optional: without a C compiler lmmbayes still installs, and
the collapsed engine compiles a PyTensor graph per fit instead.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("lmmbayes.engines.collapsed._kernel", ["lmmbayes/engines/collapsed/_kernel.c"],
                             extra_compile_args=["-O2", "-std=c11", "-fno-fast-math", "-fno-strict-aliasing"], optional=True)])
