"""Decoding as one ONNX graph: an ONNX `Loop` over the bundle's decoder step (factory side). One session call
decodes a whole caption instead of one call per token.

    python -m edgecc.export.decode_loop --bundle edgecc/models/default     # the CPU variant; manifest rewritten

`add_to_bundle` ships the beam-search loop of export/beam_loop.py (one pair, its K beams as one batch; K = 1 is
greedy) for the variant CPUs run, checked token for token against `edgecc.decoding` on seeded pairs. The manifest
lists it under "decode_loop" {"end", "graphs": {precision: {"file", "decoder_sha256"}}}; the engine uses it only
while the variant's decoder still has that sha256 (not as a variant role: calibration quantizes the decoder, and
a loop is rebuilt from the quantized one), and only for one pair at a time.

A batch loop is not built: finished rows would keep running, and an int8 decoder quantizes its activations per
call over the whole batch, so its tokens could differ from the Python search, which drops finished rows.
"""

from __future__ import annotations

import sys
from pathlib import Path


def step_nodes(decoder_path: str | Path, p: str):
    """The decoder graph as a loop body's nodes: its token and state inputs renamed `p + name` (the body's inputs),
    memory (cross_*) and weights read from the outer scope. -> (decoder model, its inputs, state input names,
    its output names: logits then the new states, the nodes)."""
    import onnx

    dec = onnx.load(str(decoder_path))
    g = dec.graph
    inits = {t.name for t in g.initializer}
    inputs = [i for i in g.input if i.name not in inits]
    names = [i.name for i in inputs]
    if "token" not in names or "position" in names:
        raise ValueError(f"{decoder_path}: the loop needs a decoder without a position input (a state decoder)")
    state_in = [n for n in names if n not in ("token",) and not n.startswith("cross_")]  # carried: ssm, conv
    outs = [o.name for o in g.output]  # logits, then the new states in state_in order
    if len(outs) != 1 + len(state_in):
        raise ValueError(f"{decoder_path}: expected logits plus one output per state input, got {outs}")
    rename = {"token": p + "token", **{s: p + s for s in state_in}}
    nodes = []
    for n in g.node:
        m = onnx.NodeProto()
        m.CopyFrom(n)
        for k, x in enumerate(m.input):
            if x in rename:
                m.input[k] = rename[x]
        nodes.append(m)
    return dec, inputs, state_in, outs, nodes


def add_to_bundle(root: str | Path, precisions: tuple[str, ...] | None = None) -> dict:
    """Build the loop for the variants' decoders (default: the one CPUs run, manifest runtime cpu_precision; each
    loop carries a copy of its decoder's weights), list the files in the manifest (sha256 by the bundle writer),
    and check each gives the Python loop's tokens on seeded pairs. -> manifest["decode_loop"]."""
    import onnx

    from edgecc.bundle import Bundle, write_manifest
    from edgecc.vocab import END

    from .beam_loop import build_beam

    root = Path(root)
    b = Bundle.open(root)
    graphs = {}
    for prec, v in b.manifest["variants"].items():
        if "decoder" not in v or prec not in (precisions or (b.cpu_precision,)):
            continue
        name = str(Path(v["decoder"]).with_name("beam_loop.onnx"))
        try:
            model = build_beam(root / v["decoder"], END)
        except ValueError:  # a decoder the loop cannot carry (a position input: a KV-cache transformer)
            continue
        onnx.save(model, str(root / name))
        # keyed by the decoder it was built from: a re-quantized decoder leaves a stale loop unused
        graphs[prec] = {"file": name, "decoder_sha256": b.manifest["files"][v["decoder"]]["sha256"]}
    m = b.manifest
    files = list(dict.fromkeys([*m["files"], *(g["file"] for g in graphs.values())]))
    loop = {"end": END, "graphs": graphs, "search": "beam search for one pair, K beams as one batch (K = 1: greedy)",
            "built_by": "export/decode_loop.py + export/beam_loop.py (one session call a caption)"}
    write_manifest(root, {**m, "files": files, "decode_loop": loop})
    _check_tokens(Bundle.open(root))
    return loop


def _check_tokens(bundle, n: int = 6) -> None:
    """The loop and the Python search give the same tokens, one pair at a time, greedy and beam 2 and 3."""
    import edgecc
    from edgecc.bench import make_inputs
    from edgecc.decoding import DecodingOptions, beam_search, greedy

    pre, post = make_inputs(int(bundle.manifest["input"]["size"]), n, seed=3)
    for prec in bundle.manifest["decode_loop"]["graphs"]:
        cap = edgecc.load(bundle.root, precision=prec, search_loop=True)
        for i in range(n):
            enc = cap.engine.encode(pre[i:i + 1], post[i:i + 1])
            state = cap.engine.initial_state(enc)
            for k in (1, 2, 3):
                opts = DecodingOptions(beam_size=k, max_len=cap.decoding.max_len,
                                       length_penalty=cap.options.length_penalty)
                want = greedy(cap.engine, state, 1, opts.max_len) if k == 1 else beam_search(
                    cap.engine, state, 1, opts, frozenset(enc.memory))
                got = cap.engine.search_loop(state, opts)
                if got != want:
                    raise ValueError(f"{bundle.root}: the {prec} decode loop differs from the Python search on pair "
                                     f"{i}, beam {k}")


def main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m edgecc.export.decode_loop")
    ap.add_argument("--bundle", required=True, help="add the loop to this bundle (manifest rewritten)")
    ap.add_argument("--precisions", help="comma-separated variants (default: the bundle's CPU precision)")
    a = ap.parse_args(argv)
    print(add_to_bundle(a.bundle, tuple(a.precisions.split(",")) if a.precisions else None))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
