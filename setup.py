"""Builds the optional native core `edgecc._native` (kernels/); all other metadata lives in pyproject.toml.

    pip install .            # compiles kernels/ with this machine's C compiler, with OpenMP when it links
    pip install -e .         # the same, in place (edgecc/_native*.so)

No compiler, or a failed compile: the install still succeeds with a warning and edgecc uses the NumPy reference
(`edgecc doctor` says why). No -march=native: the kernel picks AVX-512 / AVX2 / SSE2 / NEON at run time.
"""

from __future__ import annotations

import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

_NATIVE = "edgecc._native"
_SOURCES = ["kernels/diff_attention.c", "kernels/diff_attention_py.c"]


class OptionalBuildExt(build_ext):
    """Compile with OpenMP, else without it, else warn and skip (edgecc then runs its reference path)."""

    def run(self):
        try:
            super().run()
        except Exception as e:  # noqa: BLE001 - no compiler at all (DistutilsPlatformError and friends)
            self._skip(e)

    def build_extension(self, ext):
        msvc = self.compiler.compiler_type == "msvc"
        base = ["/O2"] if msvc else ["-O3", "-ffp-contract=fast", "-fno-math-errno"]
        omp_c, omp_l = (["/openmp"], []) if msvc else (["-fopenmp"], ["-fopenmp"])
        attempts = [(base + omp_c, omp_l, "with OpenMP"), (base, [], "without OpenMP")]
        errors = []
        for cflags, lflags, label in attempts:
            ext.extra_compile_args = list(cflags)
            ext.extra_link_args = list(lflags)
            try:
                super().build_extension(ext)
                print(f"edgecc: built {ext.name} {label}", file=sys.stderr)
                return
            except Exception as e:  # noqa: BLE001 - CompileError, LinkError, a missing or broken compiler
                errors.append(f"{label}: {e}")
        self._skip("; ".join(errors))

    def _skip(self, why) -> None:
        print(f"edgecc: WARNING: the native kernel {_NATIVE} was not built ({why}); edgecc will use the NumPy "
              "reference path (slower, same results). Install a C compiler and reinstall to get it.",
              file=sys.stderr)


setup(
    ext_modules=[Extension(_NATIVE, sources=_SOURCES, include_dirs=["kernels"],
                           depends=["kernels/diff_attention.h", "kernels/diff_attention_body.h"],
                           libraries=[] if sys.platform == "win32" else ["m"])],
    cmdclass={"build_ext": OptionalBuildExt},
)
