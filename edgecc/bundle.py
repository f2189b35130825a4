"""Model bundles: a directory with manifest.json, ONNX graphs and vocab.json, every file sha256-checked.

Example:
    >>> b = Bundle.open("edgecc/models/default")      # verifies every file's sha256 against the manifest
    >>> b.manifest["input"]["size"], b.path("encoder.onnx")
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ._atomic import atomic_path
from .errors import BundleError
from .vocab import Vocab

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
FORMAT = "edgecc-bundle"
MODELS_DIR = Path(__file__).parent / "models"
DEFAULT_BUNDLE = MODELS_DIR / "default"


def bundled_models() -> dict[str, Path]:
    """Bundles shipped in the package, by name: "default" (the edge student) and "teacher"."""
    return {p.name: p for p in sorted(MODELS_DIR.iterdir()) if (p / MANIFEST).is_file()}


def resolve(root: str | Path | None) -> Path:
    """A bundle directory, or the name of a bundled model ("default", "teacher"), or None (the default)."""
    if root is None:
        return DEFAULT_BUNDLE
    p = Path(root)
    if not p.exists() and len(p.parts) == 1 and p.name in bundled_models():
        return MODELS_DIR / p.name
    return p


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Bundle:
    """A verified bundle directory and its manifest."""

    root: Path
    manifest: dict

    @classmethod
    def open(cls, root: str | Path | None = None, verify: bool = True) -> Bundle:
        root = resolve(root)
        mpath = root / MANIFEST
        if not root.is_dir():
            raise BundleError(f"{root}: bundle directory not found")
        if not mpath.is_file():
            raise BundleError(f"{mpath}: manifest not found (is {root} an edgecc bundle?)")
        try:
            manifest = json.loads(mpath.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BundleError(f"{mpath}: manifest is not valid JSON ({e.__class__.__name__})") from None
        if manifest.get("format") != FORMAT:
            raise BundleError(f"{mpath}: not an {FORMAT} manifest")
        if manifest.get("manifest_version") != MANIFEST_VERSION:
            raise BundleError(
                f"{mpath}: unknown manifest version {manifest.get('manifest_version')!r} "
                f"(this edgecc reads version {MANIFEST_VERSION})"
            )
        bundle = cls(root, manifest)
        if verify:
            bundle.verify()
        return bundle

    def verify(self) -> None:
        """Check every file listed in the manifest exists and matches its sha256."""
        for name, meta in self.manifest["files"].items():
            p = self.root / name
            if not p.is_file():
                raise BundleError(f"{p}: file listed in the manifest is missing")
            got = sha256_file(p)
            if got != meta["sha256"]:
                raise BundleError(f"{p}: sha256 mismatch (manifest {meta['sha256'][:12]}…, file {got[:12]}…)")
        vocab_sha = self.vocab().sha256()
        if self.manifest.get("vocab_sha256") not in (None, vocab_sha):
            raise BundleError(f"{self.root / 'vocab.json'}: vocabulary hash differs from the manifest's")

    def path(self, name: str) -> Path:
        return self.root / name

    def vocab(self) -> Vocab:
        try:
            return Vocab.load(self.root / "vocab.json")
        except (ValueError, KeyError, OSError) as e:
            raise BundleError(f"{self.root / 'vocab.json'}: {e}") from None

    @property
    def name(self) -> str:
        return self.manifest.get("name", self.root.name)

    def variant(self, precision: str = "fp32") -> dict:
        """-> {"encoder": file, "decoder": file, ...} for a precision; clear error if the bundle lacks it."""
        variants = self.manifest["variants"]
        if precision not in variants:
            raise BundleError(f"{self.root}: no {precision} variant in this bundle (has: {', '.join(variants)})")
        return variants[precision]

    @property
    def cpu_precision(self) -> str:
        """The variant run on a CPU backend by default: the manifest's recommendation ("runtime" "cpu_precision")
        when the bundle has that variant, else fp32."""
        rec = self.manifest.get("runtime", {}).get("cpu_precision", "fp32")
        return rec if rec in self.manifest["variants"] else "fp32"

    def variant_metrics(self, precision: str) -> dict:
        """A variant's test metrics from the manifest (metrics, changed, gate_accuracy, ...); {} if not measured."""
        m = self.manifest
        v = m["variants"].get(precision, {})
        return v.get("test_metrics") or (m.get("metrics") if precision == m.get("precision", "fp32") else None) or {}

    def variants_info(self) -> list[dict]:
        """One row per precision variant: size, compute, decoder state and LEVIR-CC-synth test metrics."""
        m = self.manifest
        rows = []
        for prec, v in m["variants"].items():
            graphs = sorted({f for f in v.values() if isinstance(f, str) and f in m["files"]})
            met = self.variant_metrics(prec)
            rows.append({
                "name": f"{self.name}:{prec}",
                "precision": prec,
                "method": v.get("method"),
                "files": graphs,
                "size_bytes": sum(m["files"][f]["bytes"] for f in graphs),
                "params": m.get("params"),
                "gflops_per_pair": m.get("gflops_per_pair"),
                "decoder": m["decoder"].get("kind", "transformer"),
                "state_bytes_per_sequence": m["decoder"].get("state_bytes_per_sequence"),
                "metrics": {
                    "dataset": "LEVIR-CC-synth" if met.get("dataset") == "levircc-synth" else met.get("dataset"),
                    "split": met.get("split"),
                    "n": met.get("n"),
                    "CIDEr-D": (met.get("metrics") or {}).get("CIDEr-D"),
                    "CIDEr-D-changed": ((met.get("changed") or {}).get("metrics") or {}).get("CIDEr-D"),
                    "BLEU-4": (met.get("metrics") or {}).get("BLEU-4"),
                    "gate_accuracy": met.get("gate_accuracy"),
                } if met else None,
            })
        return rows

    @property
    def files_sha256(self) -> str:
        """One hash over every file's hash: the bundle's identity (cache keys use it)."""
        return hashlib.sha256(json.dumps(self.manifest["files"], sort_keys=True).encode()).hexdigest()


def write_manifest(root: str | Path, manifest: dict) -> dict:
    """Hash every file in `manifest['files']` (names only needed) and write manifest.json atomically."""
    root = Path(root)
    manifest = {"format": FORMAT, "manifest_version": MANIFEST_VERSION, **manifest}
    manifest["files"] = {
        name: {"sha256": sha256_file(root / name), "bytes": (root / name).stat().st_size} for name in manifest["files"]
    }
    with atomic_path(root / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return manifest
