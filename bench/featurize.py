"""Featurization benchmark: `transform` with `image.embedding` vs the bare forward pass and a naive loop.

Prints one JSON object. By default it runs itself twice as a child process, with tuned glibc malloc
(GLIBC_TUNABLES thresholds, as the CLI sets them) and with the default allocator; the tuned figures are the
top-level keys and both sets sit under "tuned" / "default". All ratios compare figures from the same process.
End-to-end runs and the bare forward pass alternate for `--rounds` rounds and medians are compared (the
machine drifts by +-15 % between minutes). Usage: bench/featurize.py [--images N] [--rounds N] [--full] [--single]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO / ".." / "shared" / "datasets"
CACHE = REPO / "bench" / "out" / "cache"  # exported ONNX files survive between runs (export is not measured)
MODEL = "efficientnet_lite0"


def photo_paths(limit: int | None) -> list[Path]:
    """Real JPEGs of mixed sizes: hymenoptera (varied camera photos) and clothing (400 px), interleaved."""
    groups: list[list[Path]] = []
    for name in ("hymenoptera", "clothing"):
        with open(DATASETS / name / "labels.csv", newline="") as fh:
            rows = sorted(csv.DictReader(fh), key=lambda r: r["path"])
        groups.append([DATASETS / name / r["path"] for r in rows if r["path"].lower().endswith((".jpg", ".jpeg"))])
    mixed: list[Path] = []
    for pair in zip(*groups):
        mixed.extend(pair)
    longest = max(groups, key=len)
    mixed.extend(longest[min(len(g) for g in groups):])
    return mixed[:limit] if limit else mixed


def write_csv(paths: list[Path], folder: Path) -> Path:
    """The import list: one absolute URI per row, labelled by its class folder."""
    out = folder / "photos.csv"
    with open(out, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["uri", "label"])
        for p in paths:
            writer.writerow([str(p.resolve()), p.parent.name])
    return out


def cpu_s() -> float:
    """CPU seconds used by this process (all threads): robust to other tenants on a shared machine."""
    return time.process_time()


def timed(fn) -> tuple[float, float]:  # noqa: ANN001 - any callable
    """(wall seconds, CPU seconds) of fn()."""
    wall, cpu = time.perf_counter(), cpu_s()
    fn()
    return time.perf_counter() - wall, cpu_s() - cpu


def bare_forward(embedder, n: int, batch_size: int) -> tuple[float, float]:  # noqa: ANN001
    """(images/s, CPU ms per image) of the runtime alone on pre-made tensors."""
    from visiondb.models.baselines import bare_forward_images_per_s

    cpu = cpu_s()
    rate = bare_forward_images_per_s(embedder, n=n, batch_size=batch_size)
    return rate, (cpu_s() - cpu) / n * 1e3


def stage_costs(embedder, paths: list[Path]) -> dict[str, float]:  # noqa: ANN001 - an Embedder
    """CPU ms per image of the pipeline's steps before the forward pass, one thread alone over `paths`
    (best of 3 passes): read the file, decode (the crop's box of a reduced-size JPEG), crop + normalise into a
    batch slot."""
    import numpy as np

    from visiondb.imaging.decode import decode_box

    preprocessing = embedder.preprocessing
    slot = np.empty(preprocessing.shape, dtype=np.float32)
    best = {"read": float("inf"), "decode": float("inf"), "crop_normalise": float("inf")}
    for _ in range(3):
        spent = dict.fromkeys(best, 0.0)
        for path in paths:
            t0 = time.thread_time()
            data = path.read_bytes()
            t1 = time.thread_time()
            pixels = decode_box(data, preprocessing.box, min_side=preprocessing.resize_to)
            t2 = time.thread_time()
            preprocessing.preprocess_box_into(pixels, slot)
            t3 = time.thread_time()
            spent["read"] += t1 - t0
            spent["decode"] += t2 - t1
            spent["crop_normalise"] += t3 - t2
        best = {k: min(best[k], spent[k]) for k in best}
    return {k: round(v / len(paths) * 1e3, 3) for k, v in best.items()}


def measure(args: argparse.Namespace) -> dict:
    """One process's figures (the allocator setting is whatever this process was started with)."""
    import torch

    import visiondb
    from visiondb.models.allocator import malloc_settings
    from visiondb.models.backbones import load_backbone
    from visiondb.models.baselines import naive_loop_images_per_s
    from visiondb.models.embedder import Embedder
    from visiondb.models.runtime import OnnxBackend, TorchBackend, available_cores

    paths = photo_paths(args.images)
    work = Path(tempfile.mkdtemp(prefix="vdb-bench-"))
    db = visiondb.connect(work / "bench.duckdb", cache_dir=CACHE)
    t0 = time.perf_counter()
    db.procedures.put("imp", {"type": "import.images", "params": {
        "dataFileUrl": str(write_csv(paths, work)), "outputDataset": "photos", "labelColumn": "label"}})
    import_s = time.perf_counter() - t0
    images = db.sql("SELECT count(*) FROM photos").fetchone()[0]
    db.functions.put("effnet", {"type": "image.embedding", "params": {"model": MODEL}})
    fn = db.functions.instance("effnet")
    spare = photo_paths(None)[-64:]  # warm-up on photos outside the measured set: loads the model, no cache hit
    db.functions.apply("effnet", {"url": str(spare[0].resolve())})
    embedder = fn.embedder
    batch = fn.params.batchSize
    # ... and runs the pipeline once at full batch size (worker threads, their buffers, the runtime's arena)
    list(embedder.embed_stream([(i, p.read_bytes()) for i, p in enumerate(spare)], batch_size=batch))

    cores = available_cores()
    own = embedder.backend.name + f"-{embedder.backend.concurrency}x1thread"
    backbone = load_backbone(MODEL)
    references = {own: embedder}
    if cores > 1:  # the other ONNX layout, one session with an intra-op thread per core
        references[f"onnx-cpu-1x{cores}threads"] = Embedder(
            backbone, "pooled", OnnxBackend(backbone, "pooled", CACHE / "onnx", threads=cores))
    bare: dict[str, list[tuple[float, float]]] = {}

    def bare_round() -> None:
        for name, emb in references.items():
            n = args.bare_images if not name.startswith("torch") else max(64, args.bare_images // 2)
            bare.setdefault(name, []).append(bare_forward(emb, n, batch))

    # The machine's speed drifts by +-15 % from minute to minute, so the end-to-end run and both ONNX Runtime
    # layouts are timed in alternating rounds (cache emptied before each end-to-end run) and medians compared.
    # PyTorch (never the fastest on CPU) is timed only after all rounds, so its memory is not in the featurize RSS.
    query = "SELECT label, effnet(image) AS features FROM photos"
    config = {"type": "transform", "params": {"inputData": query, "outputDataset": "features"}}
    e2e_runs: list[tuple[float, float]] = []
    forward_first = 0
    bare_round()
    for _ in range(args.rounds):
        db.embedding_cache.clear()
        rows_before = fn.forward_rows
        # timed until the cache's write-behind has stored every vector too, not just until transform returns
        e2e_runs.append(timed(lambda: (db.procedures.put("feat", config), db.embedding_cache.flush())))
        forward_first = fn.forward_rows - rows_before
        bare_round()
    rows_before = fn.forward_rows
    reruns = [timed(lambda: db.procedures.run("feat"))[0] for _ in range(args.rounds + 2)]
    forward_rerun = fn.forward_rows - rows_before
    featurize_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before the torch baseline runs
    references = {"torch-cpu": Embedder(backbone, "pooled", TorchBackend(backbone, "pooled", device="cpu"))}  # alone now
    for _ in range(2):
        bare_round()
    written = db.sql("SELECT count(*), count(features) FROM features").fetchone()

    naive_paths = paths[: args.naive_images]
    naive = naive_loop_images_per_s(naive_paths, model=MODEL, batch_size=32)

    by_backend = {
        name: {
            "images_per_s": round(statistics.median(r for r, _ in runs), 2),
            "cpu_ms_per_image": round(statistics.median(c for _, c in runs), 2),
            "rounds": len(runs),
        }
        for name, runs in bare.items()
    }
    fastest = max(by_backend, key=lambda name: by_backend[name]["images_per_s"])
    bare_rate = by_backend[fastest]["images_per_s"]
    cheapest_cpu = min(v["cpu_ms_per_image"] for v in by_backend.values())
    e2e_wall = statistics.median(w for w, _ in e2e_runs)
    e2e_cpu = statistics.median(c for _, c in e2e_runs)
    e2e_rate = images / e2e_wall
    rerun_wall = statistics.median(reruns)
    stages = stage_costs(embedder, paths)
    # the best e2e/bare ratio two cores sharing decode and inference can reach: forward / (forward + the rest)
    ceiling = cheapest_cpu / (cheapest_cpu + sum(stages.values()))
    db.close()
    return {
        "images": images,
        "naive_sample_images": len(naive_paths),
        "import_s": round(import_s, 2),
        "e2e_images_per_s": round(e2e_rate, 2),
        "e2e_s": round(e2e_wall, 2),
        "bare_forward_images_per_s": bare_rate,
        "bare_forward_backend": fastest,
        "bare_forward_by_backend": by_backend,
        "naive_images_per_s": round(naive, 2),
        "e2e_vs_bare": round(e2e_rate / bare_rate, 3),
        "e2e_vs_naive": round(e2e_rate / naive, 3),
        "e2e_cpu_ms_per_image": round(e2e_cpu / images * 1e3, 2),
        "e2e_vs_bare_cpu": round(cheapest_cpu / (e2e_cpu / images * 1e3), 3),
        "e2e_images_per_s_rounds": [round(images / w, 2) for w, _ in e2e_runs],
        "stage_cpu_ms_per_image": {**stages, "forward": cheapest_cpu},
        "e2e_vs_bare_cpu_ceiling": round(ceiling, 3),
        "cached_rerun_s": round(rerun_wall, 3),
        "cached_rerun_s_rounds": [round(r, 3) for r in reruns],
        "cached_rerun_speedup": round(e2e_wall / rerun_wall, 1),
        "forward_rows_first_run": forward_first,
        "forward_rows_rerun": forward_rerun,
        "rows_written": list(written),
        "peak_rss_mb": round(featurize_rss, 1),
        "peak_rss_mb_with_baselines": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "backend": embedder.backend.name,
        "inference_workers": embedder.backend.concurrency,
        "onnx_intra_op_threads": getattr(embedder.backend, "intra_op_threads", None),
        "torch_threads": torch.get_num_threads(),
        "decode_threads": cores,
        "batch_size": batch,
        "cores": cores,
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "malloc": malloc_settings(),
    }


def full_rss() -> dict:
    """Import and featurize every shared photo in this process; report its peak RSS."""
    import visiondb

    paths = photo_paths(None)
    work = Path(tempfile.mkdtemp(prefix="vdb-bench-full-"))
    db = visiondb.connect(work / "full.duckdb", cache_dir=CACHE)
    db.procedures.put("imp", {"type": "import.images", "params": {
        "dataFileUrl": str(write_csv(paths, work)), "outputDataset": "photos", "verify": False}})
    db.functions.put("effnet", {"type": "image.embedding", "params": {"model": MODEL}})
    start = time.perf_counter()
    db.procedures.put("feat", {"type": "transform", "params": {
        "inputData": "SELECT effnet(image) AS features FROM photos", "outputDataset": "features"}})
    seconds = time.perf_counter() - start
    n = db.sql("SELECT count(features) FROM features").fetchone()[0]
    db.close()
    return {"images": n, "e2e_images_per_s": round(n / seconds, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def child_env(tuned: bool) -> dict[str, str]:
    """Environment for a child run with or without the allocator tuning."""
    from visiondb.models.allocator import OPT_OUT_ENV, tuned_env_value

    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", OPT_OUT_ENV)}
    env["VISIONDB_PROGRESS"] = "0"
    if tuned:
        env["GLIBC_TUNABLES"] = tuned_env_value(os.environ.get("GLIBC_TUNABLES"))
    else:
        env[OPT_OUT_ENV] = "1"
    return env


def run_child(flags: list[str], tuned: bool) -> dict:
    """Run this script in a child process and parse its JSON line."""
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), *flags], env=child_env(tuned),
                          capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"featurize child ({'tuned' if tuned else 'default'} malloc) failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=512, help="photos featurized end to end (>= 500)")
    parser.add_argument("--naive-images", type=int, default=128, help="photos for the naive-loop baseline")
    parser.add_argument("--bare-images", type=int, default=256, help="tensors per bare-forward measurement")
    parser.add_argument("--rounds", type=int, default=5, help="end-to-end runs (medians are reported)")
    parser.add_argument("--full", action="store_true", help="also featurize all shared photos for peak RSS")
    parser.add_argument("--single", action="store_true", help="one run in this process (no malloc comparison)")
    parser.add_argument("--rss-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    os.environ.setdefault("VISIONDB_PROGRESS", "0")
    if args.rss_only:
        print(json.dumps(full_rss()))
        return
    if args.single:
        print(json.dumps(measure(args)))
        return
    flags = ["--single", "--images", str(args.images), "--naive-images", str(args.naive_images),
             "--bare-images", str(args.bare_images), "--rounds", str(args.rounds)]
    report: dict = {}
    for label, tuned in (("tuned", True), ("default", False)):
        report[label] = run_child(flags, tuned)
        if args.full:
            full = run_child(["--rss-only"], tuned)
            report[label]["full"] = full
            report[label]["peak_rss_mb"] = full["peak_rss_mb"]
    top = {k: v for k, v in report["tuned"].items()}
    top["malloc_tuned_vs_default_e2e"] = round(
        report["tuned"]["e2e_images_per_s"] / report["default"]["e2e_images_per_s"], 3)
    print(json.dumps({**top, **report}))


if __name__ == "__main__":
    main()
