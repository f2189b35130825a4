"""Model bundles: a directory with manifest.json, ONNX graphs and vocab.json, every file sha256-checked.

Example:
    >>> b = Bundle.open("edgecc/models/default")      # verifies every file's sha256 against the manifest
    >>> b.manifest["input"]["size"], b.path("encoder.onnx")
    >>> b = Bundle.open(verify="on_use")              # each file's sha256 when b.path() first hands it out

A bundle is untrusted input (someone may send one). Opening refuses, each with a one-line `BundleError`: a manifest
over 1 MiB, not a JSON object, of an unknown format or version, or with malformed `files` / `variants`; a file
name that is absolute, holds `..`, a backslash or a NUL, or is not listed in `files`; a listed file that is a
symlink resolving outside the bundle; and (`verify`, the default) an ONNX file whose external-data location is not
a listed file inside the bundle. Only listed, sha256-checked files inside the bundle ever reach ONNX Runtime.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ._atomic import write_json
from ._onnx_refs import OnnxParseError, external_data_locations
from .errors import BundleError
from .vocab import Vocab

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
FORMAT = "edgecc-bundle"
MAX_MANIFEST_BYTES = 1 << 20  # the shipped manifests are ~15 kB
_SHA256 = re.compile(r"[0-9a-f]{64}")
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
    on_use: bool = False  # sha256 of a file checked when path() first hands it out, not all at open
    _checked: set = field(default_factory=set, compare=False, repr=False)

    @classmethod
    def open(cls, root: str | Path | None = None, verify: bool | str = True) -> Bundle:
        """verify: True checks every file now; "on_use" checks each file the first time `path()` hands it out (a
        runtime loads one variant of several: `edgecc.load` does this); False checks the structure only."""
        root = resolve(root)
        mpath = root / MANIFEST
        if not root.is_dir():
            raise BundleError(f"{root}: bundle directory not found")
        if not mpath.is_file():
            raise BundleError(f"{mpath}: manifest not found (is {root} an edgecc bundle?)")
        if not mpath.resolve().is_relative_to(root.resolve()):
            raise BundleError(f"{mpath}: a symlink that leaves the bundle (to {mpath.resolve()})")
        size = mpath.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise BundleError(f"{mpath}: manifest is {size} bytes, more than the {MAX_MANIFEST_BYTES} byte limit")
        try:
            manifest = json.loads(mpath.read_bytes(), parse_constant=_no_constant)
        except _NonFinite as e:
            raise BundleError(f"{mpath}: manifest holds {e}, not a number") from None
        except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError, nesting or number bombs
            raise BundleError(f"{mpath}: manifest is not valid JSON ({e.__class__.__name__})") from None
        if not isinstance(manifest, dict):
            raise BundleError(f"{mpath}: manifest is not a JSON object")
        if manifest.get("format") != FORMAT:
            raise BundleError(f"{mpath}: not an {FORMAT} manifest")
        if manifest.get("manifest_version") != MANIFEST_VERSION:
            shown = repr(manifest.get("manifest_version"))[:20]
            raise BundleError(f"{mpath}: unknown manifest version {shown} (this edgecc reads version "
                              f"{MANIFEST_VERSION})")
        _check_structure(root, mpath, manifest)
        bundle = cls(root, manifest, on_use=verify == "on_use")
        if verify is True:
            bundle.verify()
        elif bundle.on_use:
            bundle._check_vocab()
        return bundle

    def verify(self) -> None:
        """Check every file listed in the manifest exists, matches its sha256, and (ONNX) keeps its external data
        in listed files inside the bundle."""
        for name in self.manifest["files"]:
            self._check_file(name)
        self._check_vocab()

    def _check_file(self, name: str) -> None:
        p, meta = self.root / name, self.manifest["files"][name]
        if not p.is_file():
            raise BundleError(f"{p}: file listed in the manifest is missing")
        got = sha256_file(p)
        if got != meta["sha256"]:
            raise BundleError(f"{p}: sha256 mismatch (manifest {meta['sha256'][:12]}…, file {got[:12]}…)")
        if name.endswith(".onnx"):
            self._check_external_data(name)
        self._checked.add(name)

    def _check_vocab(self) -> None:
        if self.on_use and "vocab.json" in self.manifest["files"] and "vocab.json" not in self._checked:
            self._check_file("vocab.json")
        vocab_sha = self.vocab().sha256()
        if self.manifest.get("vocab_sha256") not in (None, vocab_sha):
            raise BundleError(f"{self.root / 'vocab.json'}: vocabulary hash differs from the manifest's")

    def _check_external_data(self, name: str) -> None:
        p = self.root / name
        try:
            locations = external_data_locations(p)
        except (OnnxParseError, OSError) as e:
            raise BundleError(f"{p}: not a readable ONNX file ({e})") from None
        folder = PurePosixPath(name).parent
        for loc in locations:
            ref = (folder / loc).as_posix() if loc and _safe_name(loc) else None
            ref = os.path.normpath(ref) if ref else None
            if ref is None or not _safe_name(ref):
                raise BundleError(f"{p}: external data {loc!r} lies outside the bundle")
            if ref not in self.manifest["files"]:
                raise BundleError(f"{p}: external data {loc!r} is not a file listed (and checksummed) in the manifest")
            if self.on_use and ref not in self._checked:  # ONNX Runtime reads it beside the graph, not via path()
                self._check_file(ref)

    def path(self, name: str) -> Path:
        """The path of a file in the bundle; BundleError for a name that would leave it (absolute, '..')."""
        if not _safe_name(name):
            raise BundleError(f"{self.root}: unsafe file name {str(name)[:80]!r} (absolute, '..', or odd characters)")
        if name.endswith(".onnx") and name not in self.manifest["files"]:  # only checksummed graphs reach ORT
            raise BundleError(f"{self.root}: {name[:80]!r} is not a graph listed (and checksummed) in the manifest")
        if self.on_use and name in self.manifest["files"] and name not in self._checked:
            self._check_file(name)
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


def _safe_name(name: object) -> bool:
    """A relative POSIX path inside the bundle: no absolute path, drive, `..`, backslash, NUL or empty part."""
    if not isinstance(name, str) or not name or len(name) > 255 or "\\" in name or "\x00" in name:
        return False
    parts = PurePosixPath(name).parts
    return not (name.startswith("/") or ":" in parts[0] or any(x in ("..", ".", "") for x in parts))


class _NonFinite(ValueError):
    pass


def _no_constant(name: str):
    """json's NaN / Infinity / -Infinity: not JSON, and a manifest that holds one would be echoed as invalid JSON."""
    raise _NonFinite(name)


def _check_structure(root: Path, mpath: Path, m: dict) -> None:
    """BundleError unless `files` maps safe names to {"sha256": hex, ...} and no listed file leaves the bundle, and
    every file a variant names is listed."""
    files = m.get("files")
    if not isinstance(files, dict) or not files:
        raise BundleError(f"{mpath}: malformed manifest ('files' must map file names to their sha256)")
    real_root = root.resolve()
    for name, meta in files.items():
        if not _safe_name(name):
            raise BundleError(f"{mpath}: unsafe file name {name[:80]!r} (absolute, '..', or odd characters)")
        if not isinstance(meta, dict) or not isinstance(meta.get("sha256"), str) or not _SHA256.fullmatch(
                meta["sha256"]):
            raise BundleError(f"{mpath}: malformed manifest (no sha256 for {name!r})")
        if type(meta.get("bytes")) is not int or meta["bytes"] < 0:
            raise BundleError(f"{mpath}: malformed manifest (no size in bytes for {name!r})")
        p = root / name
        if (p.exists() or p.is_symlink()) and not p.resolve().is_relative_to(real_root):
            raise BundleError(f"{p}: a symlink that leaves the bundle (to {p.resolve()})")
    for section in ("input", "gate", "decoder"):
        if not isinstance(m.get(section), dict):
            raise BundleError(f"{mpath}: malformed manifest (no {section!r} section)")
    if not isinstance(m["input"].get("size"), int):
        raise BundleError(f"{mpath}: malformed manifest (no input size)")
    if "vocab.json" not in files:
        raise BundleError(f"{mpath}: malformed manifest (vocab.json is not listed in 'files')")
    variants = m.get("variants")
    if not isinstance(variants, dict) or not variants or not all(isinstance(v, dict) for v in variants.values()):
        raise BundleError(f"{mpath}: malformed manifest ('variants' must map precisions to their files)")
    for prec, v in variants.items():
        for role, name in v.items():
            if isinstance(name, str) and name.endswith(".onnx") and name not in files:
                why = "unsafe file name" if not _safe_name(name) else "a file not listed in 'files'"
                raise BundleError(f"{mpath}: variant {prec} {role} is {why} ({name[:80]!r})")
    loops = (m.get("decode_loop") or {}).get("graphs") or {}
    for prec, g in (loops.items() if isinstance(loops, dict) else [("?", None)]):
        if not isinstance(g, dict) or g.get("file") not in files:
            shown = str(g.get("file") if isinstance(g, dict) else g)[:80]
            raise BundleError(f"{mpath}: decode_loop {prec} names a file not listed in 'files' ({shown!r})")


def write_manifest(root: str | Path, manifest: dict) -> dict:
    """Hash every file in `manifest['files']` (names only needed) and write manifest.json atomically."""
    root = Path(root)
    manifest = {"format": FORMAT, "manifest_version": MANIFEST_VERSION, **manifest}
    manifest["files"] = {
        name: {"sha256": sha256_file(root / name), "bytes": (root / name).stat().st_size} for name in manifest["files"]
    }
    write_json(root / MANIFEST, manifest)
    return manifest
