"""Make ImageNet-shaped JPEGs from real photographs: the streaming benchmark's and the stream tests' data.

    python benchmarks/make_photo_like.py /tmp/photo_like                  # 2,000 train + 500 val images, 10 classes
    python benchmarks/make_photo_like.py /tmp/photo_like --train 200 --val 50

The committed CIFAR upscales (``make_imagenet_like.py``) are smooth, a few KiB each, and decode faster per pixel
than photographs. These are cut from the two photographs scikit-learn ships (``china.jpg`` and ``flower.jpg``,
640x427): a random crop (30 to 100 % of the photo's area, aspect 3/4 to 4/3), resized to ImageNet's sizes (width
about N(400, 70) px, aspect 0.75 to 1.5, so about 400x350 on average), flipped at random, with a colour
gain per channel and grain like a camera's (luminance noise over about 2 pixels), saved at JPEG quality 90: about 40 KiB
(ImageNet's average is about 110 KiB). Class ``k`` draws from photo ``k % 2`` with a colour cast of its own, so
classes differ in principle; use the set for loading and decoding speed, not for accuracy.

Writes ``OUT/train/<class>/*.jpg`` and ``OUT/val/<class>/*.jpg`` (ImageFolder layout). The images depend only on
``--seed`` and the counts. The set is built in a hidden sibling directory and renamed to OUT at the end, so an
interrupted run leaves nothing that looks complete.
"""
from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

QUALITY = 90


def photos() -> list[np.ndarray]:
    """scikit-learn's sample photographs as uint8 HxWx3 arrays."""
    from sklearn.datasets import load_sample_images

    return [np.asarray(img, dtype=np.uint8) for img in load_sample_images().images]


def photo_like(source: np.ndarray, rng: np.random.Generator, cast: np.ndarray) -> Image.Image:
    """One ImageNet-shaped image cut from ``source`` (see the module's docstring)."""
    sh, sw = source.shape[:2]
    area = rng.uniform(0.3, 1.0) * sh * sw
    aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    cw, ch = min(sw, round(math.sqrt(area * aspect))), min(sh, round(math.sqrt(area / aspect)))
    x0, y0 = int(rng.integers(0, sw - cw + 1)), int(rng.integers(0, sh - ch + 1))
    width = int(np.clip(rng.normal(400, 70), 200, 640))
    height = int(np.clip(width / rng.uniform(0.75, 1.5), 150, 640))
    img = Image.fromarray(source[y0:y0 + ch, x0:x0 + cw]).resize((width, height), Image.BICUBIC)
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    x = np.asarray(img, dtype=np.float32) * (cast * rng.uniform(0.85, 1.15, size=3))
    grain = Image.fromarray(np.clip(128 + rng.normal(0, 24, size=x.shape[:2]), 0, 255).astype(np.uint8))
    grain_level = rng.uniform(0.05, 0.15)  # a camera's grain: in the luminance, over about 2 pixels
    x += grain_level * (np.asarray(grain.filter(ImageFilter.GaussianBlur(0.8)), dtype=np.float32)[..., None] - 128)
    return Image.fromarray(np.clip(x, 0, 255).round().astype(np.uint8))


def make_photo_like(out: Path, *, train: int = 2000, val: int = 500, classes: int = 10, seed: int = 0,
                    progress: bool = True) -> Path:
    """Write ``train`` and ``val`` images over ``classes`` class folders under ``out`` (which must not exist)."""
    from tqdm.auto import tqdm

    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; remove it or choose another directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        sources, rng = photos(), np.random.default_rng(seed)
        casts = [np.asarray([1.0, 1.0, 1.0]) + 0.25 * np.asarray([math.cos(a), math.cos(a - 2.1), math.cos(a + 2.1)])
                 for a in np.linspace(0, 2 * math.pi, classes, endpoint=False)]
        jobs = [(split, i) for split, n in (("train", train), ("val", val)) for i in range(n)]
        for split, i in tqdm(jobs, desc="photo-like images", disable=not progress):
            k = i % classes
            folder = tmp / split / f"c{k:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            photo_like(sources[k % len(sources)], rng, casts[k]).save(folder / f"{i:06d}.jpg", quality=QUALITY)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="directory to create (must not exist)")
    parser.add_argument("--train", type=int, default=2000, help="training images (default 2000)")
    parser.add_argument("--val", type=int, default=500, help="validation images (default 500)")
    parser.add_argument("--classes", type=int, default=10, help="class folders (default 10)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if min(args.train, args.val) < 0 or args.classes < 1:
        parser.error(f"--train and --val must be >= 0 and --classes >= 1, got {args.train}, {args.val}, "
                     f"{args.classes}")
    if args.out.exists():
        parser.error(f"{args.out} exists; remove it or choose another directory")
    out = make_photo_like(args.out, train=args.train, val=args.val, classes=args.classes, seed=args.seed)
    files = list(out.rglob("*.jpg"))
    size = sum(f.stat().st_size for f in files) / max(len(files), 1) / 1024
    print(f"wrote {len(files):,} JPEGs (mean {size:.0f} KiB, quality {QUALITY}) under {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
