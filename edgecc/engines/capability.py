"""One capability table: backend x precision -> can it run here, and if not, why. The CLI, `bench`, `doctor` and
the tests all read it (in the spirit of ultralytics' export-formats table), so the rule lives in one place.

Example:
    >>> from edgecc.engines.capability import capabilities, format_table
    >>> rows = capabilities(Bundle.open())                       # [Capability(backend, precision, reason), ...]
    >>> [(r.backend, r.precision) for r in rows if r.available]  # [('ort-cpu', 'fp32'), ('ort-cpu', 'int8'), ...]
    >>> print(format_table(rows))

A precision joins by one `register_precision` call, a backend by one `register_backend` call; the table grows
without new code here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .base import BACKENDS, Backend


@dataclass(frozen=True)
class Precision:
    """A numeric precision a bundle variant (ORT backends) or a cast checkpoint (torch backends) can run at.

    ORT-like backends run it when the bundle manifest has the variant; the torch engine casts the checkpoint to
    `torch_dtype` (None: it cannot), on CPU only when `torch_cpu`.
    """

    name: str
    torch_dtype: str | None = None
    torch_cpu: bool = False


PRECISIONS: dict[str, Precision] = {}


def register_precision(p: Precision) -> Precision:
    PRECISIONS[p.name] = p
    return p


register_precision(Precision("fp32", torch_dtype="float32", torch_cpu=True))
register_precision(Precision("fp16", torch_dtype="float16"))
register_precision(Precision("int8"))


@dataclass(frozen=True)
class Capability:
    backend: str
    precision: str
    device: str
    reason: str | None  # None: runs here

    @property
    def available(self) -> bool:
        return self.reason is None


def checkpoint_path(bundle, checkpoint: str | Path | None = None) -> Path | None:
    """The PyTorch checkpoint a torch backend would load: `checkpoint`, else <bundle>/model.pt; None if absent."""
    ck = Path(checkpoint) if checkpoint else (bundle.path("model.pt") if bundle is not None else None)
    return ck if ck is not None and ck.is_file() else None


def reason(backend: Backend | str, precision: Precision | str, bundle=None,
           checkpoint: str | Path | None = None) -> str | None:
    """None when (backend, precision) can run here (with this bundle, when given), else why not, in one line."""
    backend = BACKENDS[backend] if isinstance(backend, str) else backend
    precision = PRECISIONS[precision] if isinstance(precision, str) else precision
    why = backend.available()
    if why:
        return why
    if backend.kind == "torch":
        if precision.torch_dtype is None:
            return f"{precision.name} is not supported by the torch engine"
        if backend.device == "cpu" and not precision.torch_cpu:
            return f"{precision.name} on CPU not supported by this engine"
        if bundle is not None and checkpoint_path(bundle, checkpoint) is None:
            return "no PyTorch checkpoint in the bundle (edgecc bench --checkpoint, edgecc.load(checkpoint=...))"
        return None
    if bundle is None:
        return None
    if precision.name not in bundle.manifest.get("variants", {}):
        return f"no {precision.name} variant in the bundle"
    if backend.options.get("fusion") == "split" and "fusion" not in bundle.manifest:
        return "the bundle has no split encoder (no difference-attention kernel to switch off)"
    return None


def capabilities(bundle=None, backends: tuple[str, ...] | None = None, precisions: tuple[str, ...] | None = None,
                 checkpoint: str | Path | None = None) -> list[Capability]:
    """Every asked backend x precision (default: all registered) with the reason it cannot run, if any."""
    names = backends or tuple(BACKENDS)
    precs = precisions or tuple(PRECISIONS)
    for asked, reg in ((names, BACKENDS), (precs, PRECISIONS)):
        unknown = [x for x in asked if x not in reg]
        if unknown:
            raise ValueError(f"unknown {', '.join(unknown)}: choose from {', '.join(reg)}")
    return [Capability(b, p, BACKENDS[b].device, reason(b, p, bundle, checkpoint)) for b in names for p in precs]


def check(backend: str, precision: str, bundle=None, checkpoint: str | Path | None = None) -> None:
    """Raise ValueError naming the reason when (backend, precision) cannot run here (the CLI's one-line error)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    why = reason(backend, precision, bundle, checkpoint)
    if why:
        raise ValueError(f"backend {backend} cannot run {precision} here: {why}")


def format_table(rows: list[Capability]) -> str:
    """Backends as lines, precisions as columns: 'ok' or the reason (repeated reasons folded per backend)."""
    precs = list(dict.fromkeys(r.precision for r in rows))
    width = max((len(r.backend) for r in rows), default=7)
    lines = [f"{'backend':{width}s}  " + "  ".join(f"{p:5s}" for p in precs) + "  why not"]
    for b in dict.fromkeys(r.backend for r in rows):
        mine = [r for r in rows if r.backend == b]
        marks = "  ".join(f"{'ok' if r.available else '-':5s}" for r in mine)
        why = "; ".join(dict.fromkeys(f"{r.precision}: {r.reason}" if len({x.reason for x in mine}) > 1 else r.reason
                                      for r in mine if r.reason))
        lines.append(f"{b:{width}s}  {marks}  {why}".rstrip())
    return "\n".join(lines)


__all__ = ["PRECISIONS", "Capability", "Precision", "capabilities", "check", "checkpoint_path", "format_table",
           "reason", "register_precision"]
