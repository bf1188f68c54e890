"""Builds the collapsed engine's C kernel; everything else is in pyproject.toml.

The extension is optional: without a C compiler lmmbayes still installs, and
the collapsed engine compiles a PyTensor graph per fit instead.
"""

from setuptools import Extension, setup

# No -ffast-math, so a seed gives the same draws everywhere; the Gaussian routes' small block loops ask for -O3
# themselves (SMALL_BLOCKS in _kernel.c).
setup(ext_modules=[Extension("lmmbayes.engines.collapsed._kernel", ["lmmbayes/engines/collapsed/_kernel.c"],
                             extra_compile_args=["-O2", "-std=c11", "-fno-fast-math", "-fno-strict-aliasing"], optional=True)])
