"""KNN table cost: wall time and peak memory of ``trickbox.functional.knn_table`` on CIFAR training images.

Run by ``benchmarks/run.py`` in a subprocess (so its memory is its own)::

    python benchmarks/knn.py --data ../shared/datasets/cifar10-jpeg.zip --n 50000 --k 200

It loads the training images (``load_dataset``, cached after the first decode),
records the resident memory (RSS) after loading as the baseline, then samples
RSS every 10 ms while ``knn_table(train_x.flatten(1), k)`` runs. It prints one
JSON line: seconds, baseline and peak RSS, the extra peak over the baseline,
and the process's ``ru_maxrss``.
"""
from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import threading
import time
from pathlib import Path


class RssSampler:
    """Samples this process's RSS in a background thread and keeps the maximum."""

    def __init__(self, interval: float = 0.01) -> None:
        import psutil

        self._proc = psutil.Process()
        self.interval = interval
        self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="time knn_table on CIFAR training images")
    p.add_argument("--data", required=True, help="ImageFolder zip or directory")
    p.add_argument("--n", type=int, default=50000, help="number of training images (at most all of them)")
    p.add_argument("--k", type=int, default=200)
    p.add_argument("--same-class", action="store_true", help="neighbours within the class only (SC+KNN)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache-dir", default=None, help="decoded-image cache (default: trickbox's)")
    args = p.parse_args(argv)

    import psutil
    import torch

    from trickbox.data import DataConfig, load_dataset
    from trickbox.functional import knn_table

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    cfg = DataConfig(name="imagefolder", root=args.data, val_fraction=0.0, cache_dir=args.cache_dir)
    data = load_dataset(cfg, progress=False)
    load_s = time.perf_counter() - t0
    x = data.train_x[: args.n].flatten(1).contiguous()
    labels = data.train_y[: args.n].clone() if args.same_class else None
    del data
    gc.collect()
    baseline = psutil.Process().memory_info().rss
    with RssSampler() as sampler:
        t0 = time.perf_counter()
        table = knn_table(x, args.k, labels=labels)
        seconds = time.perf_counter() - t0
    if table.shape != (len(x), args.k):
        print(f"knn: unexpected table shape {tuple(table.shape)}", file=sys.stderr)
        return 1
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(json.dumps({
        "n": len(x), "dim": x.shape[1], "k": args.k, "same_class": args.same_class, "seconds": seconds,
        "load_s": load_s, "baseline_rss": baseline, "peak_rss": sampler.peak, "extra_rss": sampler.peak - baseline,
        "ru_maxrss": maxrss, "table_bytes": table.numel() * table.element_size(),
    }))
    return 0


if __name__ == "__main__":
    if str(Path(__file__).resolve().parent) not in sys.path:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
