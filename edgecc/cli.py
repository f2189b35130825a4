"""The `edgecc` command: a thin shell over the library (see examples/ for the same through the API).

    edgecc caption pre.tif post.tif [--json] [--geojson changes.geojson] [--heatmap heat.tif]
    edgecc watch SOURCE --reference REF --events events.jsonl      (streaming change monitor)
    edgecc bench --quick            edgecc info [BUNDLE]            edgecc doctor
    edgecc train / export / eval    (the factory: pip install 'edgecc[train,eval]')
    edgecc quantize BUNDLE          (int8 + fp16 variants, calibrated and accuracy-controlled; factory)
    edgecc batch MANIFEST --out DIR [--ray] [--ray-address A]   (archives of pairs and series; resumable)
    edgecc search DIR "new buildings near the road"      (rank a batch result's changed tiles by caption)
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

import click
import typer
from typer.core import TyperGroup


class _Shell(TyperGroup):
    """`--debug` anywhere on the line; Ctrl-C is `edgecc: interrupted` (exit 130); a warning is one line."""

    def parse_args(self, ctx, args):
        cut = args.index("--") if "--" in args else len(args)
        if "--debug" in args[:cut]:  # also after the subcommand: `edgecc caption a b --debug`
            args = ["--debug", *(a for a in args[:cut] if a != "--debug"), *args[cut:]]
        return super().parse_args(ctx, args)

    def invoke(self, ctx):
        """The one place a failure becomes `edgecc: error: <one line>` (exit 2; a traceback only with --debug)."""
        with warnings.catch_warnings():  # restores showwarning after (CliRunner runs in the caller's process)
            warnings.showwarning = _show_warning
            try:
                return super().invoke(ctx)
            except KeyboardInterrupt:
                typer.echo("edgecc: interrupted", err=True)
                raise typer.Exit(130) from None
            except BrokenPipeError:  # `edgecc search ... | head -1`: the reader left; quiet, as a Unix tool
                try:
                    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
                except (OSError, ValueError, AttributeError):  # a stdout without a descriptor (an embedding host)
                    pass
                raise typer.Exit(141) from None
            except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort, typer.Exit):
                raise  # usage errors and exits keep click's own wording and codes
            except Exception as e:
                if ctx.meta.get("edgecc.debug"):
                    raise
                text = e.format_message() if hasattr(e, "format_message") else str(e)  # names the option
                msg = text.splitlines()[0] if text else e.__class__.__name__
                typer.echo(f"edgecc: error: {msg}", err=True)
                raise typer.Exit(2) from None


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """`edgecc: warning: <message>`: no Python file, line number or source line."""
    text = str(message).strip()
    typer.echo(f"edgecc: warning: {text.splitlines()[0] if text else category.__name__}", err=True)


app = typer.Typer(cls=_Shell, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Change captioning at the edge: two images of the same place in, one sentence out.")

def _parse_bands(bands: str | None):
    if not bands:
        return None
    try:
        out = tuple(int(b) for b in bands.split(","))
    except ValueError:
        raise typer.BadParameter(f"--bands takes 1-based band numbers like 3,2,1, got {bands!r}") from None
    if any(b < 1 for b in out):
        raise typer.BadParameter(f"--bands are 1-based, got {bands!r}")
    return out


@app.callback()
def _main(ctx: typer.Context,
          debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors (anywhere on the line).")):
    ctx.meta["edgecc.debug"] = debug


@app.command()
def caption(
    pre: str = typer.Argument(..., help="Before image (GeoTIFF, PNG, JPEG; or a GDAL URI: /vsicurl/..., s3://...)."),
    post: str = typer.Argument(..., help="After image, same place."),
    model: Path | None = typer.Option(None, "--model", "-m", help="Bundle dir or model name (default, teacher)."),
    backend: str = typer.Option("ort-cpu", help="Engine backend (see `edgecc doctor`)."),
    precision: str | None = typer.Option(None, help="Bundle variant: fp32, fp16, int8 (default: the bundle's "
                                         "recommendation on CPU, int8 for the student; else fp32)."),
    beam: int | None = typer.Option(None, min=1, help="Beam size (1 = greedy; default: the bundle's recommendation)."),
    threshold: float | None = typer.Option(None, help="Change threshold on change_score, a calibrated probability "
                                           "(default: the bundle's own, see `edgecc info`). Lower: more recall, "
                                           "more false alarms."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    geojson: Path | None = typer.Option(None, help="Write changed tiles with captions as GeoJSON."),
    geojson_crs: str = typer.Option("image", help="GeoJSON coordinates: 'image' (the image CRS) or 'EPSG:4326'."),
    heatmap: Path | None = typer.Option(None, help="Write the change-probability heatmap (GeoTIFF or PNG)."),
    bands: str | None = typer.Option(None, help="1-based bands to use as RGB, e.g. 3,2,1."),
    resize: bool = typer.Option(False, help="Resize the after image to the before image if sizes differ."),
    max_pixels: int | None = typer.Option(None, "--max-pixels", min=1, help="Refuse images whose header claims more "
                                          "pixels than this (default 2^31; a guard against corrupt headers)."),
    max_decode_mb: int | None = typer.Option(None, "--max-decode-mb", min=1, help="Memory one decode may take "
                                             "(default 512): PNG/JPEG are decoded whole, GeoTIFF by block."),
    gsd: float | None = typer.Option(None, "--gsd", min=0.01, max=10000.0,
                                     help="Ground resolution in metres per pixel (default: from a georeferenced pair "
                                     "in a metric CRS). Imagery coarser than the model's 0.5 m is cut into smaller, "
                                     "upsampled tiles."),
    overlap: int = typer.Option(32, help="Tile overlap in pixels for large scenes (at the model's resolution)."),
    batch: int = typer.Option(8, min=1, help="Tiles per inference batch."),
    progress: bool = typer.Option(True, help="Progress bar for large scenes (on stderr, when a terminal)."),
):
    """Caption what changed between two images of the same place."""
    import edgecc
    from edgecc.decoding import DecodingOptions
    from edgecc.imagery import ReadOptions
    from edgecc.tiling import TileOptions

    options = DecodingOptions(beam_size=beam) if beam is not None else None
    captioner = edgecc.load(model, backend=backend, precision=precision, options=options, threshold=threshold)
    limit = {k: v for k, v in {"max_pixels": max_pixels, "max_decode_mb": max_decode_mb}.items() if v}
    with warnings.catch_warnings(record=True) as seen:  # shown on stderr below, and kept in the JSON
        warnings.simplefilter("always")
        scene = captioner.caption(
            pre, post, ReadOptions(bands=_parse_bands(bands), resize=resize, **limit),
            TileOptions(tile=captioner.input_size, overlap=overlap, batch=batch, progress=progress),
            geojson=geojson, heatmap=heatmap, geojson_crs=geojson_crs, gsd=gsd,
        )
    said = list(dict.fromkeys(str(w.message).strip().splitlines()[0] for w in seen))
    for msg in said:
        typer.echo(f"edgecc: warning: {msg}", err=True)
    if as_json:
        from edgecc._atomic import finite

        out = {**scene_json(scene, captioner.bundle.name, captioner.precision), "warnings": said}
        typer.echo(json.dumps(finite(out), allow_nan=False))
        return
    typer.echo(scene.caption)
    if len(scene.tiles) > 1:
        typer.echo(scene.summary, err=True)


def scene_json(scene, model_name: str, precision: str | None = None) -> dict:
    t = scene.timings
    return {
        "caption": scene.caption,
        "changed": scene.changed,
        "change_score": round(scene.change_score, 4),
        "timings_ms": {
            "encode": round(t.get("encode_ms", 0.0), 2),
            "decode": round(t.get("decode_ms", 0.0), 2),
            "total": round(t.get("total_s", 0.0) * 1e3, 2),
        },
        "model": model_name,
        "precision": precision,
        "tiles": [
            {"col": x.col, "row": x.row, "width": x.width, "height": x.height, "caption": x.caption,
             "changed": x.changed, "change_score": round(x.change_score, 4)}
            for x in scene.tiles
        ],
        "summary": scene.summary,
        "crs": scene.crs,
    }


@app.command()
def info(model: str | None = typer.Argument(None, help="Bundle dir or model name (default, teacher); or --model."),
         model_option: str | None = typer.Option(None, "--model", "-m", help="Bundle dir or model name, as for "
                                                 "`edgecc caption --model`."),
         as_json: bool = typer.Option(False, "--json", help="Variants as JSON (size, GFLOPs, state, metrics).")):
    """Show a bundle's manifest: model, inputs, precision variants and the metrics of the variant that runs."""
    if model and model_option and model != model_option:
        raise typer.BadParameter(f"two models given ({model} and --model {model_option}); give one")
    from edgecc.bundle import Bundle, bundled_models
    from edgecc.tune import current

    b = Bundle.open(model_option or model)
    m, runs = b.manifest, current(b).precision  # what caption runs here: `edgecc tune`'s choice, else the bundle's
    if as_json:
        typer.echo(json.dumps({"bundle": str(b.root), "name": b.name, "arch": m.get("arch"), "cpu_precision": runs,
                               "bundled_models": {k: str(v) for k, v in bundled_models().items()},
                               "variants": b.variants_info()}, indent=2))
        return
    rows = [("bundle", str(b.root)),
            ("name", f"{m.get('name')}  ({m.get('arch')}, {m.get('params', 0) / 1e6:.2f}M params)"),
            ("input", f"{m['input']['size']}x{m['input']['size']} {','.join(m['input']['bands'])} uint8"),
            ("variants", f"{', '.join(m['variants'])}  ({runs} runs by default on this CPU; opset {m.get('opset')})"),
            ("gate", f"threshold {m['gate']['threshold']}")]
    width = max(map(len, m["files"]))
    rows += [("file", f"{name:<{width}}  {meta['bytes'] / 1e6:7.2f} MB  sha256 {meta['sha256'][:16]}…")
             for name, meta in m["files"].items()]
    met = b.variant_metrics(runs)
    if met:
        label = "LEVIR-CC-synth" if met.get("dataset") == "levircc-synth" else met.get("dataset")
        beam = f", beam {met['beam_size']}" if met.get("beam_size") else ""
        rows.append(("metrics", f"{runs} (the default) on {label} {met.get('split')}, n={met.get('n')}{beam}"))
        for head, sub in (("  all", met.get("metrics", {})), ("  changed", met.get("changed", {}).get("metrics", {}))):
            rows.append((head, "  ".join(f"{n} {v:.3f}" for n, v in sub.items())))
        rows.append(("  gate", f"accuracy {_num(met.get('gate_accuracy'))}  mask IoU {_num(met.get('mask_iou'))}"))
    else:
        rows.append(("metrics", f"{runs}: not measured"))
    for label, text in rows:
        typer.echo(f"{label:<12}{text}")


def _num(v) -> str:
    return "-" if v is None else f"{v:.4f}"


@app.command()
def doctor():
    """Versions, ONNX Runtime providers, backends usable here, CPU features, TensorRT presence."""
    import importlib
    import platform

    import numpy

    from edgecc.cpu import cpu

    typer.echo(f"python        {platform.python_version()} ({platform.machine()}, {platform.system()})")
    typer.echo(f"numpy         {numpy.__version__}")
    try:
        import onnxruntime as ort

        typer.echo(f"onnxruntime   {ort.__version__}  providers: {', '.join(ort.get_available_providers())}")
    except ImportError:
        typer.echo("onnxruntime   not installed")
    for mod in ("cv2", "rasterio", "tensorrt", "torch"):
        try:
            m = importlib.import_module(mod)
            typer.echo(f"{mod:13s} {getattr(m, '__version__', '?')}")
        except ImportError:
            typer.echo(f"{mod:13s} not installed")
    c = cpu()
    typer.echo(f"cpu           {c.model}; {c.cores} cores; {' '.join(c.isa) or '-'}")
    from edgecc.fusion import native_status

    fused = native_status()
    typer.echo(f"fused kernel  {'built' if fused['built'] else 'not built'}, "
               f"{'in use' if fused['in_use'] else 'not in use'}: {fused['reason']}")
    try:
        from edgecc.bundle import Bundle

        b = Bundle.open()
        typer.echo(f"default model {b.root} ({b.name}) verified")
    except Exception as e:  # noqa: BLE001
        typer.echo(f"default model unusable: {e}")
        b = None
    from edgecc.engines.capability import capabilities, format_table

    typer.echo("backends x precisions (default model):")
    typer.echo("\n".join("  " + line for line in format_table(capabilities(b)).splitlines()))
    if b is not None:
        from edgecc.tune import cache_path, current

        choice = current(b)
        typer.echo(f"tuning        {choice.source}: {choice.precision}, {choice.encoder_threads} encoder / "
                   f"{choice.decoder_threads} decoder threads, dates {'batched' if choice.batch_dates else 'apart'}"
                   f"{'' if choice.spin else ', threads sleep'}")
        typer.echo(f"              why: {choice.why}")
        typer.echo(f"              cache: {cache_path(b)}")


@app.command()
def tune(
    model: Path | None = typer.Option(None, "--model", "-m", help="Bundle dir or model name (default, teacher)."),
    reps: int = typer.Option(30, min=1, help="Timed calls per candidate (median)."),
):
    """Measure threads, precision and date batching on this CPU; cache the fastest for `caption`, `watch`, `bench`."""
    from edgecc.bundle import Bundle
    from edgecc.tune import cache_path
    from edgecc.tune import tune as run_tune

    b = Bundle.open(model)
    choice = run_tune(b, reps=reps, say=lambda msg: typer.echo(msg, err=True))
    typer.echo(f"{choice.precision}, {choice.encoder_threads} encoder / {choice.decoder_threads} decoder threads, "
               f"dates {'batched' if choice.batch_dates else 'apart'}{'' if choice.spin else ', threads sleep'}")
    typer.echo(choice.why)
    typer.echo(f"cached in {cache_path(b)}", err=True)


@app.command()
def train(
    captions: Path = typer.Option(..., help="LevirCCcaptions.json (LEVIR-CC captions, official split)."),
    out: Path = typer.Option(Path("runs/teacher"), help="Output directory (model.pt, train_log.jsonl)."),
    data_root: Path | None = typer.Option(None, help="A real LEVIR-CC root; default: LEVIR-CC-synth."),
    steps: int = typer.Option(3000, min=1),
    batch: int = typer.Option(64, min=1),
    lr: float = typer.Option(5e-4),
    variants: int = typer.Option(2, min=1, help="Renders per changed training pair."),
    limit: int | None = typer.Option(None, min=1, help="Use only the first N pairs per split (smoke runs)."),
    threads: int = typer.Option(2),
    init: Path | None = typer.Option(None, help="Continue from this checkpoint's weights."),
):
    """Train the teacher (factory: needs edgecc\\[train])."""
    from edgecc.train.train import TrainOptions
    from edgecc.train.train import train as run

    path = run(TrainOptions(captions=str(captions), out=str(out), data_root=str(data_root) if data_root else None,
                            steps=steps, batch=batch, lr=lr, variants=variants, limit=limit, threads=threads,
                            init=str(init) if init else None))
    typer.echo(f"checkpoint {path}")


@app.command()
def distill(
    teacher: Path = typer.Option(..., help="The teacher's model.pt."),
    captions: Path = typer.Option(..., help="LevirCCcaptions.json."),
    out: Path = typer.Option(Path("runs/student")),
    decoder: str = typer.Option("mamba", help="transformer | mamba | sparse"),
    trunk_blocks: int = typer.Option(8, help="Lite0 blocks kept (8, 10 or 11)."),
    steps: int = typer.Option(2000, min=1),
    batch: int = typer.Option(64, min=1),
    lr: float = typer.Option(1e-3),
    limit: int | None = typer.Option(None, min=1, help="Use only the first N pairs per split (smoke runs)."),
):
    """Distil the teacher into an edge student on LEVIR-CC-synth (factory: needs edgecc\\[train])."""
    from edgecc.train.distill import DistillOptions
    from edgecc.train.distill import distill as run
    from edgecc.train.student import DECODERS

    if decoder not in DECODERS:
        raise typer.BadParameter(f"--decoder {decoder!r}: choose one of {', '.join(DECODERS)}")
    if not teacher.is_file():
        raise typer.BadParameter(f"--teacher {teacher}: no such file")
    path = run(DistillOptions(captions=str(captions), teacher=str(teacher), out=str(out), decoder=decoder,
                              trunk_blocks=trunk_blocks, steps=steps, batch=batch, lr=lr, limit=limit))
    typer.echo(f"checkpoint {path}")


@app.command()
def export(
    checkpoint: Path = typer.Argument(..., help="model.pt from `edgecc train`."),
    out: Path = typer.Argument(..., help="Bundle directory to write."),
    validate: bool = typer.Option(True, help="ONNX checker + PyTorch parity + identical greedy tokens."),
    name: str | None = typer.Option(None),
):
    """Export a checkpoint to a validated ONNX bundle (factory: needs edgecc\\[train])."""
    from edgecc.export.onnx import ExportOptions, export_bundle

    m = export_bundle(checkpoint, out, ExportOptions(validate=validate, name=name))
    typer.echo(f"bundle {out}: {', '.join(m['files'])}; validation {json.dumps(m.get('validation', 'skipped'))}")


@app.command("eval")
def evaluate(
    captions: Path = typer.Option(..., help="LevirCCcaptions.json."),
    model: Path | None = typer.Option(None, "--model", "-m", help="Bundle dir or model name (default, teacher)."),
    split: str = typer.Option("test"),
    data_root: Path | None = typer.Option(None, help="A real LEVIR-CC root; default: LEVIR-CC-synth."),
    limit: int | None = typer.Option(None, min=1),
    beam: int | None = typer.Option(None, min=1, help="Beam size (default: the bundle's recommendation)."),
    backend: str = typer.Option("ort-cpu"),
    precision: str = typer.Option("fp32", help="Bundle variant: fp32, fp16, int8."),
    checkpoint: Path | None = typer.Option(None, help="model.pt for the torch backends (parity of metrics)."),
    meteor: bool = typer.Option(True, help="METEOR needs Java."),
    as_json: bool = typer.Option(False, "--json"),
    update_manifest: bool = typer.Option(False, help="Store the metrics in the bundle's manifest."),
):
    """Evaluate a bundle: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D (all, changed), gate accuracy, mask IoU, baselines."""
    from edgecc.train.evaluate import EvalOptions, evaluate_bundle, format_report, store_metrics

    if update_manifest and (model is None or limit is not None):
        raise typer.BadParameter("--update-manifest rewrites a bundle's stored metrics: name the bundle with --model "
                                 "and evaluate the whole split (no --limit)")
    if checkpoint is not None and not backend.startswith("torch"):
        raise typer.BadParameter(f"--checkpoint is for the torch backends (--backend torch-cpu), not {backend}")
    if checkpoint is not None and not checkpoint.is_file():
        raise typer.BadParameter(f"--checkpoint {checkpoint}: no such file")
    opts = EvalOptions(split=split, limit=limit, beam_size=beam, meteor=meteor,
                       data_root=str(data_root) if data_root else None, precision=precision)
    engine_options = {"checkpoint": checkpoint} if checkpoint else {}
    rep = evaluate_bundle(model, str(captions), opts, backend=backend, **engine_options)
    if update_manifest:
        store_metrics(model, rep, precision)
    typer.echo(json.dumps(rep) if as_json else format_report(rep))


@app.command("eval-real")
def eval_real(
    data: Path = typer.Option(..., help="The folder with real_pairs/ (and levircc/ for the synth pairs)."),
    model: Path | None = typer.Option(None, "--model", "-m", help="Bundle dir or model name (default, teacher)."),
    precision: str | None = typer.Option(None, help="Bundle variant (default: the bundle's CPU recommendation)."),
    out: Path | None = typer.Option(None, help="Write the report as JSON here (e.g. benchmarks/results/real-*.json)."),
    captions: bool = typer.Option(True, help="Caption changed tiles and check (x, x) on every real image."),
    as_json: bool = typer.Option(False, "--json"),
):
    """Judge a bundle on real pairs, leave-one-source-out: recall, false alarms, AUROC, ECE, mask F1, invariance."""
    from edgecc._atomic import check_outputs, write_json
    from edgecc.train.evaluate_real import RealEvalOptions, evaluate_real, format_real_report

    check_outputs({"--out": out})  # before the evaluation, not after
    rep = evaluate_real(model, RealEvalOptions(data=str(data), precision=precision), captions=captions)
    if out:
        write_json(out, rep)
    typer.echo(json.dumps(rep) if as_json else format_real_report(rep))


@app.command("fit-gate")
def fit_gate(
    data: Path = typer.Option(..., help="The folder with real_pairs/ (and levircc/ for the synth pairs)."),
    model: Path = typer.Option(..., "--model", "-m", help="Bundle directory to put the gate into (rewritten)."),
):
    """Fit the change gate on real labelled pairs and install it in a bundle (gate.onnx, validated, manifest)."""
    import shutil
    import tempfile

    from edgecc.export.gate import install_gate, prepare_tokens
    from edgecc.train.evaluate_real import RealEvalOptions, fit_shipped_gate

    if not (data / "real_pairs").is_dir():
        raise typer.BadParameter(f"{data}: no real_pairs/ folder here (the labelled real pairs the gate is fitted on)")
    if not (model / "manifest.json").is_file():
        raise typer.BadParameter(f"{model}: not an edgecc bundle (no manifest.json)")
    model = Path(os.path.realpath(model))  # `.` or a link to the bundle: the folder itself is swapped
    # the work happens on a copy: a failure part way leaves the bundle as it was
    work = Path(tempfile.mkdtemp(prefix=f".{model.name}-gate-", dir=model.parent))
    try:
        shutil.copytree(model, work, dirs_exist_ok=True)
        prepare_tokens(work)
        head, info = fit_shipped_gate(work, RealEvalOptions(data=str(data)))
        m = install_gate(work, head, info)
        old = model.with_name(f".{model.name}-old-{work.name[-8:]}")
        model.rename(old)
        work.rename(model)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    g = m["gate"]
    typer.echo(f"gate.onnx installed in {model}: identity score {g['identity_score']}, threshold {g['threshold']}")


@app.command()
def quantize(
    bundle: Path = typer.Argument(..., help="Bundle directory with an fp32 variant; variants are added in place."),
    method: str = typer.Option("minmax", help="INT8 activation calibration: minmax, percentile, entropy."),
    max_drop: float = typer.Option(0.01, help="Changed-subset CIDEr-D int8 may lose vs fp32 on the control subset."),
    int8: bool = typer.Option(True, "--int8/--no-int8", help="Write the int8 variant (static QDQ, ORT CPU)."),
    fp16: bool = typer.Option(True, "--fp16/--no-fp16", help="Write the fp16 variant (for CUDA / TensorRT)."),
    calibration_set: Path | None = typer.Option(None, help="Calibration set file (default: the committed one)."),
    control_pairs: int = typer.Option(200, min=0, help="LEVIR-CC-synth val changed pairs, accuracy control (0: off)."),
    data_root: Path | None = typer.Option(None, help="Root of set paths and captions (default ../shared/data)."),
):
    """Add INT8 and FP16 variants to a bundle: calibrated on a committed set, held to a CIDEr-D budget (factory)."""
    from edgecc.calibration.quantize import QuantizeOptions, quantize_bundle

    precisions = tuple(p for p, on in (("int8", int8), ("fp16", fp16)) if on)
    if not precisions:
        raise typer.BadParameter("--no-int8 and --no-fp16 leave nothing to write")
    opts = QuantizeOptions(method=method, max_drop=max_drop, control_pairs=control_pairs, precisions=precisions,
                           calibration_set=str(calibration_set) if calibration_set else None,
                           data_root=str(data_root) if data_root else None)
    m = quantize_bundle(bundle, opts, log=lambda s: typer.echo(s, err=True))
    for p in precisions:
        v, met = m["variants"][p], m["variants"][p].get("metrics")
        quality = (f"LEVIR-CC-synth val control ({met['n']} changed): CIDEr-D {met['CIDEr-D']:.4f} vs fp32 "
                   f"{met['fp32_CIDEr-D']:.4f} (drop {met['drop']:+.4f})" if met else "no accuracy control")
        floats = sum(len(n) for n in (v.get("float_nodes") or {}).values())
        typer.echo(f"{p}  {v['size_bytes'] / 1e6:6.2f} MB  {v['method']}  {quality}"
                   + (f"  float nodes {floats}" if p == "int8" else ""))


@app.command()
def bench(
    model: Path | None = typer.Option(None, "--model", "-m", help="Bundle dir or model name (default, teacher)."),
    checkpoint: Path | None = typer.Option(None, help="PyTorch checkpoint for the torch-* rows."),
    quick: bool = typer.Option(False, help="Fewer repetitions (a smoke run)."),
    backends: str | None = typer.Option(None, help="Comma-separated backends (default: every registered one)."),
    precisions: str | None = typer.Option(None, help="Comma-separated precisions (default: fp32,fp16,int8)."),
    batches: str = typer.Option("1,8", help="Comma-separated batch sizes."),
    json_path: Path | None = typer.Option(None, "--json", help="Write the report as JSON."),
    markdown: Path | None = typer.Option(None, help="Write the table as markdown."),
    plot: Path | None = typer.Option(None, help="Write latency vs CIDEr-D as PNG (needs edgecc\\[plot])."),
):
    """Latency, throughput, cold start and memory across backends x precisions x batch sizes, beside the quality
    the bundle manifest stores per variant (`edgecc eval` measures it)."""
    from edgecc import bench as b
    from edgecc._atomic import check_outputs

    def names(s, opt):  # "a, b,a" -> ("a", "b"); an empty list is refused, not read as "all"
        if s is None:
            return None
        out = tuple(dict.fromkeys(x.strip() for x in s.split(",") if x.strip()))
        if not out:
            raise typer.BadParameter(f"{opt} {s!r} names nothing; give comma-separated names")
        return out

    try:
        sizes = tuple(int(x) for x in names(batches, "--batches"))
    except ValueError:
        raise typer.BadParameter(f"--batches takes batch sizes like 1,8, got {batches!r}") from None
    if min(sizes) < 1:
        raise typer.BadParameter(f"--batches are sizes >= 1, got {batches!r}")
    check_outputs({"--json": json_path, "--markdown": markdown, "--plot": plot})  # before the run, not after
    opts = b.BenchOptions(model=str(model) if model else None, checkpoint=str(checkpoint) if checkpoint else None,
                          quick=quick, backends=names(backends, "--backends"),
                          precisions=names(precisions, "--precisions"), batches=sizes)
    report = b.run(opts)
    b.print_table(report)
    b.save_outputs(report, json_path=json_path, markdown_path=markdown, plot_path=plot)


@app.command()
def watch(
    source: str = typer.Argument(..., help="Video file, image folder, GeoTIFF glob, camera index, rtsp:// or http(s)://."),
    reference: Path = typer.Option(..., "--reference", "-r", help="Reference image (a GeoTIFF gives map polygons)."),
    events: Path = typer.Option(Path("events.jsonl"), "--events", "-e", help="JSONL event log (appended)."),
    model: Path | None = typer.Option(None, "--model", "-m", help="Bundle dir or model name (default, teacher)."),
    every: int = typer.Option(1, help="Process every N-th frame."),
    deadline_ms: float | None = typer.Option(None, "--deadline-ms", help="Skip frames older than this when taken."),
    follow: bool = typer.Option(False, help="Keep watching an image folder for new files."),
    replay: bool | None = typer.Option(None, "--replay/--live", help="Every frame / latest wins (default: by source)."),
    snapshots: Path | None = typer.Option(None, help="Write a pre|post PNG per event into this folder."),
    stats: bool = typer.Option(False, "--stats", help="Print counters and stage latencies as JSON on exit."),
    max_frames: int | None = typer.Option(None, "--max-frames", help="Stop after this many source frames."),
    threshold: float | None = typer.Option(None, help="Change threshold on a map tile's evidence, the mean "
                                           "calibrated gate probability of the frames that saw it (default: the "
                                           "bundle's watch rule)."),
    min_obs: int | None = typer.Option(None, "--min-obs", help="Frames that must see a tile before it can make an "
                                       "event (default: the bundle's watch rule)."),
    tiles_per_frame: int | None = typer.Option(None, "--tiles-per-frame", help="Map tiles scored per frame, least "
                                               "seen first (default: the bundle's watch rule; 1 without one)."),
    gsd: float | None = typer.Option(None, "--gsd", help="The reference's metres per pixel (default: from a "
                                     "georeferenced map; sets the tile size the model sees)."),
    min_overlap: float = typer.Option(0.5, "--min-overlap", help="Skip frames less than this fraction inside the map."),
    registration: str = typer.Option("ecc", "--registration", help="Fine alignment: ecc (gradients, across dates), "
                                     "orb, sift, rootsift."),
    telemetry: Path | None = typer.Option(None, help="Sidecar CSV/SRT: per-frame lat, lon, heading, altitude."),
    camera_fov: float | None = typer.Option(None, "--camera-fov", help="Horizontal field of view in degrees (with "
                                            "the telemetry's altitude: the frame's ground resolution)."),
    cache: bool = typer.Option(True, "--cache/--no-cache", help="Encode each reference tile once (split encoder)."),
    trust_telemetry: bool = typer.Option(False, "--trust-telemetry", help="Register a frame on its telemetry alone "
                                         "when the image cannot be aligned (areas rebuilt since the map)."),
):
    """Watch a live source for changes against a reference map; one JSON line per change event."""
    import logging

    import edgecc
    from edgecc.stream import RegisterOptions, WatchOptions, format_stats
    from edgecc.stream import watch as run_watch

    opts = WatchOptions(every=every, deadline_ms=deadline_ms, follow=follow, replay=replay, max_frames=max_frames,
                        register=RegisterOptions(method=registration, min_overlap=min_overlap,
                                                 trust_prior=trust_telemetry),
                        telemetry=str(telemetry) if telemetry else None, camera_fov_deg=camera_fov,
                        reference_cache=cache, gate_threshold=threshold, min_obs=min_obs,
                        tiles_per_frame=tiles_per_frame, gsd=gsd)
    handler = logging.StreamHandler()  # never silent: skips by reason go to stderr as "edgecc: watch: ..."
    handler.setFormatter(logging.Formatter("edgecc: %(message)s"))
    wlog = logging.getLogger("edgecc.watch")
    wlog.addHandler(handler)
    wlog.propagate = False
    try:
        st = run_watch(edgecc.load(model), source, reference, events, opts, snapshots=snapshots)
    finally:
        wlog.removeHandler(handler)
        wlog.propagate = True
    typer.echo(json.dumps(st.as_dict(), allow_nan=False) if stats else format_stats(st), err=not stats)


@app.command()
def batch(
    manifest: Path = typer.Argument(..., help="CSV (id,pre,post or id,date,image) or JSON Lines manifest."),
    out: Path = typer.Option(..., "--out", "-o", help="Result folder (items/, changes.gpkg, summary.json)."),
    model: str | None = typer.Option(None, "--model", "-m", help="Bundle dir or model name (default, teacher)."),
    precision: str | None = typer.Option(None, help="Bundle variant (default: the bundle's CPU recommendation)."),
    beam: int | None = typer.Option(None, min=1, help="Beam size (default: the bundle's recommendation)."),
    threshold: float | None = typer.Option(None, help="Change threshold on change_score (default: the bundle's)."),
    workers: int | None = typer.Option(None, min=1, help="Parallel workers (default: the cores; Ray: cluster CPUs)."),
    threads: int | None = typer.Option(None, min=1, help="ONNX Runtime threads per worker (default: cores/workers)."),
    ray: bool = typer.Option(False, "--ray", help="Run on Ray actors (needs edgecc\\[cluster]): a local Ray cluster, "
                             "or the one RAY_ADDRESS or --ray-address names."),
    ray_address: str | None = typer.Option(None, "--ray-address", metavar="ADDRESS",
                                           help="Ray cluster to join ('auto', 'ray://head:10001'); implies --ray."),
    limit: int | None = typer.Option(None, min=1, help="Only the first N items of the manifest."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check the manifest and say what would run; write nothing."),
    geojson: bool = typer.Option(False, help="Write a GeoJSON of changed tiles per pair (DIR/geojson/)."),
    heatmap: bool = typer.Option(False, help="Write a change heatmap GeoTIFF per pair (DIR/heatmaps/)."),
    geojson_crs: str = typer.Option("image", help="Per-pair GeoJSON coordinates: 'image' or 'EPSG:4326'."),
    progress: bool = typer.Option(True, help="Progress bar with ETA (on stderr, when a terminal)."),
    bands: str | None = typer.Option(None, help="1-based bands to use as RGB, e.g. 3,2,1 (every item)."),
    resize: bool = typer.Option(False, help="Resize an after image to its before image if sizes differ."),
    gsd: float | None = typer.Option(None, "--gsd", min=0.01, max=10000.0,
                                     help="Ground resolution in metres per pixel of non-georeferenced items (as for "
                                     "caption)."),
    overlap: int = typer.Option(32, min=0, help="Tile overlap in pixels for large scenes (as for caption)."),
):
    """Caption an archive of pairs and dated series; resumable; exit 1 when any item failed."""
    from edgecc.batch import BatchOptions, ManifestError, run_batch

    opts = BatchOptions(model=model, precision=precision, beam=beam, threshold=threshold, workers=workers,
                        threads=threads, engine="ray" if ray or ray_address else "local", ray_address=ray_address,
                        limit=limit, dry_run=dry_run, geojson=geojson, heatmap=heatmap, geojson_crs=geojson_crs,
                        progress=progress, bands=_parse_bands(bands), resize=resize, gsd=gsd, overlap=overlap)
    try:
        res = run_batch(manifest, out, opts)
    except ManifestError as e:
        for line in e.problems:
            typer.echo(f"edgecc: error: {line}", err=True)
        raise typer.Exit(2) from None
    if dry_run:
        typer.echo(f"{res.items} items: {res.skipped} finished, {res.items - res.skipped} to run ({res.pairs} pairs) "
                   f"on {res.engine} with {res.workers or 'cluster'} workers x {res.threads} threads; nothing written")
        return
    for f in res.failures:
        typer.echo(f"edgecc: failed: {manifest}:{f['row']}: {f['id']}: {f['error']}", err=True)
    typer.echo(f"{res.items} items: {res.ran} run, {res.skipped} already finished, {res.failed} failed, "
               f"{res.changed} changed; {res.pairs} pairs in {res.elapsed_s:.1f} s; {out}/summary.json")
    if res.failed:
        raise typer.Exit(1)


@app.command()
def search(
    results: Path = typer.Argument(..., help="A result folder of `edgecc batch`."),
    query: str = typer.Argument(..., help="What to look for, e.g. \"new buildings near the road\"."),
    top: int = typer.Option(20, min=1, help="Show the best N matches."),
    geojson: Path | None = typer.Option(None, help="Write the matches as GeoJSON."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per match."),
):
    """Rank the changed tiles of a batch result folder by their captions (BM25)."""
    from edgecc.search import search as run_search
    from edgecc.search import write_geojson

    hits = run_search(results, query, top=top)
    if geojson:
        write_geojson(hits, geojson)
    for h in hits:
        t = h.tile
        if as_json:
            typer.echo(json.dumps({"match": h.score, **{k: v for k, v in t.items() if k != "polygon"}}))
        else:
            dates = f"{t['pre_date'] or '?'}..{t['post_date'] or '?'}"
            typer.echo(f"{h.score:7.3f}  {t['id']}  {dates}  tile {t['col']},{t['row']}  {t['score']:.2f}  "
                       f"{t['caption']}")
    if not hits:
        typer.echo(f"no changed tile's caption matches {query!r}", err=True)


def main() -> None:
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")  # before cv2 loads: no OpenCV warnings beside our errors
    app()


if __name__ == "__main__":
    main()
