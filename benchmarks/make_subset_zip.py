"""Copy a few images per class of an ImageFolder zip into a smaller zip with the same layout.

    python benchmarks/make_subset_zip.py ../shared/datasets/cifar10-jpeg.zip /tmp/cifar-small.zip --per-class 300

The result holds ``train/<class>/*`` (``--per-class`` images of each class) and
``test/<class>/*`` (``--test-per-class``, default a fifth of that, at least 1).
Images are the first ones of each class in sorted name order, stored without
recompression, so the subset is deterministic and small enough to carry to a
GPU machine (CIFAR-10 JPEGs are about 1 KiB each).
"""
from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path

try:  # runnable as a script from any directory
    import trickbox  # noqa: F401
except ImportError:  # pragma: no cover - trickbox not installed; use the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_subset_zip(src: str | Path, dst: str | Path, *, per_class: int,
                    test_per_class: int | None = None) -> dict[str, int]:
    """Write the subset zip ``dst``; return image counts ``{"train": n, "test": m, "classes": k}``."""
    from trickbox.data import DataConfig
    from trickbox.data.layout import find_layout

    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    test_n = max(1, per_class // 5) if test_per_class is None else test_per_class
    if test_n < 1:
        raise ValueError(f"test_per_class must be >= 1, got {test_per_class}")
    src, dst = Path(src), Path(dst)
    if not zipfile.is_zipfile(src):
        raise ValueError(f"{str(src)!r} is not a zip file; give an ImageFolder zip with train/ and test/")
    counts = {"train": 0, "test": 0}
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    layout = find_layout(DataConfig(name="imagefolder", root=str(src)))
    with zipfile.ZipFile(src) as zin:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zout:
            for split, samples, quota in (("train", layout.train.samples, per_class),
                                          ("test", layout.test.samples, test_n)):
                taken = [0] * len(layout.classes)
                for name, label in samples:  # type: ignore[union-attr]
                    if taken[label] >= quota:
                        continue
                    taken[label] += 1
                    base = name.rsplit("/", 1)[-1]
                    zout.writestr(f"{split}/{layout.classes[label]}/{base}", zin.read(name))
                    counts[split] += 1
    tmp.replace(dst)
    return {**counts, "classes": len(layout.classes)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src", help="ImageFolder zip (train/<class>/*, test/<class>/*)")
    p.add_argument("dst", help="the smaller zip to write")
    p.add_argument("--per-class", type=int, required=True, help="training images per class")
    p.add_argument("--test-per-class", type=int, default=None, help="test images per class (default: per-class // 5)")
    args = p.parse_args(argv)
    try:
        counts = make_subset_zip(args.src, args.dst, per_class=args.per_class, test_per_class=args.test_per_class)
    except (ValueError, OSError) as exc:
        print(f"make_subset_zip: error: {exc}", file=sys.stderr)
        return 2
    size = Path(args.dst).stat().st_size
    print(f"wrote {args.dst}: {counts['train']} train + {counts['test']} test images, {counts['classes']} classes, "
          f"{size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
