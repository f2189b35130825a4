"""Where batch items run: in this process, on a local process pool, or on Ray actors. Each worker loads the bundle
once (one ONNX Runtime session set per worker) and captions items with `edgecc.batch.caption_item`.

    run = ENGINES["local"]                      # or "inline", "ray"
    run(jobs, cfg, workers=2, threads=1, on_result=lambda job, rec: ..., address=None)

Every engine calls `on_result(job, record)` in the calling process as each item finishes (the caller writes it),
keeps few items in flight (2 per worker), and turns a worker that dies (segfault, out of memory, a lost node)
into failed records for the items it held; the run goes on. Scheduling across machines is Ray's.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

__all__ = ["ENGINES"]

_IN_FLIGHT_PER_WORKER = 2  # one running, one queued: the worker never waits for the next item
_DIED = "a worker process died (crash or out of memory) while this item was in flight"
_worker: dict = {}  # process-local: the worker's captioner and run settings (set by _init_worker in each worker)


def load_captioner(cfg: dict, threads: int):
    """The captioner a worker holds: the bundle verified and sessions built once."""
    import edgecc
    from edgecc.decoding import DecodingOptions

    options = DecodingOptions(beam_size=cfg["beam"]) if cfg.get("beam") else None
    return edgecc.load(cfg.get("model"), precision=cfg.get("precision"), options=options,
                       threshold=cfg.get("threshold"), encoder_threads=threads, decoder_threads=1)


def _failed(job: dict, error: str) -> dict:
    from edgecc.batch import failed_record

    return failed_record(job, error)


# ---------------------------------------------------------------------------------------------- inline


def run_inline(jobs: Iterable[dict], cfg: dict, workers: int, threads: int, on_result: Callable, address=None) -> None:
    from edgecc.batch import caption_item

    captioner = load_captioner(cfg, threads)
    for job in jobs:
        on_result(job, caption_item(captioner, job, cfg))


# ---------------------------------------------------------------------------------------------- process pool


def _init_worker(cfg: dict, threads: int) -> None:
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    import cv2

    cv2.setNumThreads(1)  # resizes and warps stay on the worker's own core
    _worker["captioner"] = load_captioner(cfg, threads)
    _worker["cfg"] = cfg


def _work(job: dict) -> dict:
    from edgecc.batch import caption_item

    return caption_item(_worker["captioner"], job, _worker["cfg"])


def run_pool(jobs: Iterable[dict], cfg: dict, workers: int, threads: int, on_result: Callable, address=None) -> None:
    """A local process pool (spawned workers: no forked ONNX Runtime threads). A worker that dies fails the items
    in flight, and a new pool takes the rest."""
    import multiprocessing as mp

    todo = iter(jobs)
    restart, barren = True, 0  # barren: pools in a row that died before finishing any item
    while restart:  # a new pool after a worker died, for the items not yet started
        restart = False
        if barren >= 3:
            raise RuntimeError("batch worker processes keep dying before finishing any item (run with --workers 1 "
                               "to see why)")
        pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                   initargs=(cfg, threads))
        pending: dict = {}
        try:
            while True:
                while len(pending) < workers * _IN_FLIGHT_PER_WORKER and (job := next(todo, None)) is not None:
                    try:
                        pending[pool.submit(_work, job)] = job
                    except BrokenProcessPool:  # a worker died since the last wait: this job never started
                        todo = itertools.chain([job], todo)
                        restart = True
                        break
                if not pending:
                    break
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    job = pending.pop(fut)
                    try:
                        rec = fut.result()
                    except BrokenProcessPool:
                        restart = True
                        rec = _failed(job, _DIED)
                    except Exception as e:  # noqa: BLE001 - e.g. a record that cannot be pickled
                        rec = _failed(job, f"{type(e).__name__}: {e}")
                    else:
                        barren = -1
                    on_result(job, rec)
                if restart:
                    barren += 1
                    for job in pending.values():
                        on_result(job, _failed(job, _DIED))
                    pending.clear()
                    break
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------------------------------------- Ray


class _CaptionActor:
    """A Ray actor holding one captioner: the bundle is loaded once per actor, items stream through it."""

    def __init__(self, cfg: dict, threads: int):
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
        self.cfg = cfg
        self.captioner = load_captioner(cfg, threads)

    def run(self, job: dict) -> dict:
        from edgecc.batch import caption_item

        return caption_item(self.captioner, job, self.cfg)


def run_ray(jobs: Iterable[dict], cfg: dict, workers: int | None, threads: int, on_result: Callable,
            address: str | None = None) -> None:
    """Ray actors (`num_cpus=threads` each; `workers` of them, default: the cluster's CPUs / threads).

    address None or "local": `ray.init()` joins the cluster RAY_ADDRESS names (as under `ray job submit`) or the
    one `ray start` started on this machine, else starts a local one (shut down after); "auto" or
    "ray://host:10001" joins that one. Ray places the actors on
    nodes; items go to the actor with the fewest in flight.
    """
    try:
        import ray
    except ImportError:
        raise ImportError("--ray needs Ray: pip install 'edgecc[cluster]'") from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=None if address in (None, "", "local") else address, include_dashboard=False,
                 log_to_driver=False, logging_level="WARNING")
    try:
        total = int(ray.cluster_resources().get("CPU", 1))
        n = workers or max(1, total // threads)
        actor_cls = ray.remote(num_cpus=threads, max_restarts=3, max_task_retries=0)(_CaptionActor)
        actors = [actor_cls.remote(cfg, threads) for _ in range(n)]
        load = {i: 0 for i in range(n)}
        pending: dict = {}  # ObjectRef -> (job, actor index)
        todo = iter(jobs)
        exhausted = False
        while True:
            while not exhausted and load and min(load.values()) < _IN_FLIGHT_PER_WORKER:
                job = next(todo, None)
                if job is None:
                    exhausted = True
                    break
                i = min(load, key=load.get)
                pending[actors[i].run.remote(job)] = (job, i)
                load[i] += 1
            if not pending:
                if not exhausted and not load:  # every actor is gone: fail the rest, keep the record straight
                    for job in todo:
                        on_result(job, _failed(job, "every Ray worker died; nothing ran this item"))
                break
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                job, i = pending.pop(ref)
                try:
                    rec = ray.get(ref)
                except ray.exceptions.RayActorError as e:
                    rec = _failed(job, f"the Ray worker died while this item was in flight ({type(e).__name__})")
                    if not _alive(ray, actors[i]):
                        load.pop(i, None)
                except ray.exceptions.RayError as e:
                    rec = _failed(job, f"Ray: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
                if i in load:
                    load[i] -= 1
                on_result(job, rec)
    finally:
        if started:
            ray.shutdown()


def _alive(ray, actor) -> bool:
    try:
        ray.get(actor.__ray_ready__.remote(), timeout=60)
        return True
    except Exception:  # noqa: BLE001 - dead for good (restarts exhausted) or unreachable
        return False


ENGINES: dict[str, Callable] = {"inline": run_inline, "local": run_pool, "ray": run_ray}
