"""Builds the collapsed engine's C kernel; everything else is in pyproject.toml.

The extension is optional: without a C compiler lmmbayes still installs, and
the collapsed engine compiles a PyTensor graph per fit instead.
"""

from setuptools import Extension, setup

# -O3 unrolls the kernel's small fixed-size block loops (about a quarter off a q = 4 crossed gradient); no
# -ffast-math, so a seed gives the same draws everywhere.
setup(ext_modules=[Extension("lmmbayes.engines.collapsed._kernel", ["lmmbayes/engines/collapsed/_kernel.c"],
                             extra_compile_args=["-O3", "-std=c11", "-fno-fast-math", "-fno-strict-aliasing"], optional=True)])
