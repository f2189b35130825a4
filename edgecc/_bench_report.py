"""Presentation of an `edgecc.bench` report: rich terminal table, markdown table, latency-vs-CIDEr-D plot.

Example:
    >>> print_table(report); Path("bench.md").write_text(to_markdown(report)); save_plot(report, "bench.png")
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

from ._atomic import write_bytes

QUALITY_LABEL = "LEVIR-CC-synth"
_QUALITY = ("CIDEr-D", "CIDEr chg", "BLEU-4", "gate", "drift")  # from the manifest: "n/a" where it has none
_COLUMNS = (  # header, getter, format
    ("backend", lambda r: r["backend"], "{}"),
    ("prec", lambda r: r["precision"], "{}"),
    ("B", lambda r: r["batch"], "{}"),
    ("status", lambda r: r["status"], "{}"),
    ("MB", lambda r: r["size_bytes"] and r["size_bytes"] / 1e6, "{:.2f}"),
    ("read", lambda r: _stage(r, "read"), "{:.2f}"),
    ("prep", lambda r: _stage(r, "preprocess"), "{:.2f}"),
    ("enc", lambda r: _stage(r, "encode", r["latency_ms"]["encode_p50"]), "{:.2f}"),
    ("fus", lambda r: _stage(r, "fusion"), "{:.2f}"),
    ("dec", lambda r: _stage(r, "decode"), "{:.2f}"),
    ("tok", lambda r: r["latency_ms"].get("token_mean"), "{:.3f}"),
    ("total p50/90/99", lambda r: _triple(r["latency_ms"]), "{}"),
    ("pairs/s", lambda r: r["throughput_pairs_s"], "{:.1f}"),
    ("cold s", lambda r: r["cold_start_s"], "{:.2f}"),
    ("RSS MB", lambda r: r["peak_rss_mb"], "{:.0f}"),
    ("CIDEr-D", lambda r: r["quality"]["CIDEr-D"], "{:.3f}"),
    ("CIDEr chg", lambda r: r["quality"]["CIDEr-D-changed"], "{:.3f}"),
    ("BLEU-4", lambda r: r["quality"]["BLEU-4"], "{:.3f}"),
    ("gate", lambda r: r["quality"]["gate_accuracy"], "{:.3f}"),
    ("drift", lambda r: r["quality"]["cider_drift"], "{:+.4f}"),
    ("reason", lambda r: r.get("reason") or "", "{}"),
)


def _stage(row: dict, name: str, fallback=None):
    """Mean ms per call in one stage (read, preprocess, encode, fusion, decode), from the engine's timing hook."""
    return (row.get("stages_ms") or {}).get(name, fallback if not row.get("stages_ms") else None)


def _triple(lat: dict) -> str | None:
    if lat["total_p50"] is None:
        return None
    return f"{lat['total_p50']:.1f}/{lat['total_p90']:.1f}/{lat['total_p99']:.1f}"


def _cells(row: dict) -> list[str]:
    return [("n/a" if head in _QUALITY else "-") if (v := get(row)) is None else fmt.format(v)
            for head, get, fmt in _COLUMNS]


def _caption(report: dict) -> str:
    m, b = report["machine"], report["bundle"]
    q = next((r["quality"] for r in report["rows"] if r["quality"]["CIDEr-D"] is not None), None)
    qual = f"quality: {QUALITY_LABEL} {q.get('split')} n={q.get('n')} from the bundle manifest" if q else "quality: n/a"
    isa = " ".join(m.get("cpu_flags") or []) or "-"
    t = report.get("tuning")
    tuned = (f"tuned ({t['source']}): {t['precision']}, {t['encoder_threads']}/{t['decoder_threads']} encoder/decoder "
             f"threads, dates {'batched' if t['batch_dates'] else 'apart'}"
             f"{'' if t.get('spin', True) else ', threads sleep'}; " if t else "")
    return (f"{b['name']} ({b['files_sha256'][:12]}) on {m['cpu'].strip()} (ISA: {isa}), {m['cores']} cores"
            f"{', GPU ' + m['gpu'] if m.get('gpu') else ''}; onnxruntime {m['versions']['onnxruntime']}; "
            f"load {m['loadavg_at_start']}; {report['date']}; {tuned}{qual}; total: latency ms p50 per call at the "
            "row's batch; read/prep/enc/fus/dec: mean ms per call in each stage (read: one PNG pair from disk, per "
            f"pair); tok: decode ms per decoder step; gate on, decoding {_decoding(b)}; "
            "drift: CIDEr-D minus the fp32 variant's")


def _decoding(bundle: dict) -> str:
    d = bundle.get("decoding", {"beam_size": 1})
    if d.get("beam_size", 1) == 1:
        return "greedy"
    return f"beam {d['beam_size']} (length penalty {d.get('length_penalty', 1.0)})"


def print_table(report: dict, console=None) -> None:
    """The rows that ran (columns empty in all of them left out), then the skipped ones as a short list by reason."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=None if sys.stdout.isatty() else 220)  # files and pipes get every column
    rows = [r for r in report["rows"] if r["status"] != "skipped"]
    cells = [_cells(r) for r in rows]
    keep = [i for i in range(len(_COLUMNS)) if i < 4 or any(c[i] not in ("-", "", "n/a") for c in cells)]
    table = Table(title="edgecc bench", caption=_caption(report), show_lines=False)
    for i in keep:
        head = _COLUMNS[i][0]
        table.add_column(head, overflow="fold", no_wrap=head != "reason", min_width=24 if head == "reason" else None)
    for r, c in zip(rows, cells, strict=True):
        table.add_row(*(c[i] for i in keep), style="red" if r["status"] == "failed" else None)
    console.print(table)
    if skipped := skipped_list(report["rows"]):
        console.print(skipped, markup=False, highlight=False)


def skipped_list(rows: list[dict]) -> str:
    """The skipped rows, one line per reason ("  ort-cuda fp32/fp16/int8, ort-tensorrt fp32: <reason>"), batch sizes
    folded; "" when nothing was skipped."""
    by_reason: dict[str, dict[str, list[str]]] = {}
    for r in rows:
        if r["status"] == "skipped":
            precs = by_reason.setdefault(r["reason"] or "no reason given", {}).setdefault(r["backend"], [])
            if r["precision"] not in precs:
                precs.append(r["precision"])
    lines = []
    for reason, backends in by_reason.items():
        which = ", ".join(f"{b} {'/'.join(p)}" for b, p in backends.items())
        lines.append(f"  {which}: {reason}")
    return "\n".join(["skipped (cannot run here):", *lines]) if lines else ""


def to_markdown(report: dict) -> str:
    lines = ["# edgecc bench", "", _caption(report), "",
             "| " + " | ".join(h for h, _, _ in _COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    for r in report["rows"]:
        lines.append("| " + " | ".join(c.replace("|", "/") for c in _cells(r)) + " |")
    return "\n".join(lines) + "\n"


def save_plot(report: dict, path: str | Path) -> None:
    """Latency (batch-1 total p50) vs CIDEr-D, one point per (backend, precision) that has both."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("--plot needs matplotlib: pip install 'edgecc[plot]'") from None
    pts = [r for r in report["rows"] if r["batch"] == min(x["batch"] for x in report["rows"])
           and r["latency_ms"]["total_p50"] is not None and r["quality"]["CIDEr-D"] is not None]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for r in pts:
        ax.scatter(r["latency_ms"]["total_p50"], r["quality"]["CIDEr-D"])
        ax.annotate(f"{r['backend']} {r['precision']}", (r["latency_ms"]["total_p50"], r["quality"]["CIDEr-D"]),
                    textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("end-to-end latency p50 (ms, batch 1)")
    ax.set_ylabel(f"CIDEr-D ({QUALITY_LABEL})")
    ax.set_title(f"edgecc bench: {report['bundle']['name']} on {report['machine']['cpu'][:40]}", fontsize=9)
    if not pts:
        ax.text(0.5, 0.5, "no row has both latency and quality", ha="center", transform=ax.transAxes)
    ax.margins(x=0.2, y=0.2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    write_bytes(path, buf.getvalue())  # atomic, into a folder made if missing
