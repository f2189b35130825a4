"""What CPU this is: model name, ISA features, usable cores. Read once; doctor, bench and tuning share it.

    >>> from edgecc.cpu import cpu
    >>> c = cpu()
    >>> c.model, c.cores, c.isa          # ('Intel(R) Xeon(R) ...', 2, ('avx2', 'fma', 'avx512f', ...))
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass
from pathlib import Path

# The features that change which kernels ONNX Runtime (MLAS) and our fused kernel pick, in display order.
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "neon",
             "asimd", "asimddp")


@dataclass(frozen=True)
class CPU:
    model: str
    machine: str  # x86_64, aarch64
    cores: int  # usable by this process (affinity), not installed
    flags: frozenset[str]

    @property
    def isa(self) -> tuple[str, ...]:
        """The features in ISA_FLAGS this CPU has, e.g. ('sse4_2', 'avx', 'avx2', 'fma')."""
        return tuple(f for f in ISA_FLAGS if f in self.flags)

    def as_dict(self) -> dict:
        return {"model": self.model, "machine": self.machine, "cores": self.cores, "isa": list(self.isa)}


def _parse(text: str) -> tuple[str | None, frozenset[str]]:
    """/proc/cpuinfo text -> (model name, flags); x86 says 'model name'/'flags', ARM 'Features'."""
    model, flags = None, frozenset()
    for line in text.splitlines():
        key, _, val = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = val.strip()
        elif key in ("flags", "Features") and not flags:
            flags = frozenset(val.split())
    return model, flags


@functools.cache
def cpu() -> CPU:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    model, flags = _parse(text)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return CPU(model=model or platform.processor() or "unknown", machine=platform.machine(), cores=cores,
               flags=flags)
