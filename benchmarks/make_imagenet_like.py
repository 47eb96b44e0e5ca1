"""Make an ImageNet-shaped dataset (100 classes, JPEGs of 200-500 px a side) from the CIFAR-10 JPEG zip.

    python benchmarks/make_imagenet_like.py /tmp/imagenet_like            # 20,000 images, 100 classes

Writes, under OUT_DIR:

- ``folder/train/<class>/*.jpg`` and ``folder/val/<class>/*.jpg`` (ImageFolder layout; classes ``n0000`` ..),
- the same images as WebDataset shards ``wds/train-000000.tar`` .. and ``wds/val-000000.tar`` .., each
  sample a ``<key>.jpg`` and a ``<key>.cls`` (the class index as ASCII text), samples shuffled across shards,
- ``wds/classes.txt`` (one class name per line, line i is class index i) and ``README.md``.

Every image is a random sub-rectangle of one CIFAR-10 ``train/`` image, upscaled (bicubic) to a width and
height drawn independently from [200, 500], with a small colour jitter, saved at JPEG quality 85. Class k
shows CIFAR class ``k % 10``; its group ``k // 10`` adds a colour tint of its own hue and a crop style
(wide or zoomed), so the 100 classes can be told apart in principle. Within a CIFAR class no source image
is used twice while there are enough (5,000 per class), so train and val never share a source image.
The images have ImageNet's shapes, not its content: use the set for data loading and throughput benchmarks,
not to report accuracy. Being smooth upscales, they compress far better than photographs (a few KiB each,
against ImageNet's ~110 KiB), so JPEG decoding costs less per pixel than on ImageNet.

The result depends only on ``--seed`` and the options (not on ``--workers``), for a given Pillow build.
It is built in a hidden sibling directory that is renamed to OUT_DIR at the end, so an interrupted run
leaves no OUT_DIR that looks complete.
"""
from __future__ import annotations

import argparse
import colorsys
import hashlib
import io
import math
import multiprocessing
import os
import shlex
import shutil
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL
from PIL import Image
from tqdm import tqdm

PROG = "make_imagenet_like"
REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "datasets" / "cifar10-jpeg.zip"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MIN_SIDE, MAX_SIDE = 200, 500
JPEG_QUALITY = 85
TINT_STRENGTH = 0.35
JITTER = 0.1  # brightness, contrast and saturation factors drawn from [1 - JITTER, 1 + JITTER]
ASPECT_WOBBLE = 0.15  # crop aspect = output aspect * exp(U(-w, w)): a little stretching, not much
CROP_STYLES = ((0.70, 1.00), (0.45, 0.75))  # side fraction of the source kept: "wide", "zoomed"
SPLITS = ("train", "val")
CHUNKSIZE = 16


class UsageError(Exception):
    """A bad option or input: reported as one line, exit status 2."""


@dataclass(frozen=True)
class ClassStyle:
    """How one output class is drawn: which CIFAR class, which tint, which crop sizes."""

    source_class: int
    tint: tuple[float, float, float]
    crop_range: tuple[float, float]


@dataclass(frozen=True)
class ImageSpec:
    """Everything needed to render one image, drawn up front so the result does not depend on workers."""

    split: str
    label: int
    key: str
    member: str  # zip member of the source image
    crop: tuple[float, float, float, float]  # left, top, width, height as fractions of the source
    size: tuple[int, int]  # output width, height
    jitter: tuple[float, float, float]  # brightness, contrast, saturation factors
    tint: tuple[float, float, float]


@dataclass(frozen=True)
class Plan:
    """The class names and the images of both splits, each split in its shard (shuffled) order."""

    classes: list[str]
    source_classes: list[str]
    styles: list[ClassStyle]
    images: dict[str, list[ImageSpec]]
    reused_sources: int


# --------------------------------------------------------------------------------------------- listing


def list_source(archive: zipfile.ZipFile, shown: str) -> dict[str, list[str]]:
    """The ``train/<class>/<image>`` members of the zip, by class name, both sorted."""
    by_class: dict[str, list[str]] = {}
    for name in archive.namelist():
        parts = name.split("/")
        if len(parts) == 3 and parts[0] == "train" and parts[2].lower().endswith(IMAGE_SUFFIXES):
            by_class.setdefault(parts[1], []).append(name)
    if not by_class:
        raise UsageError(f"{shown} has no train/<class>/<image> members; give an ImageFolder zip such as "
                         f"{DEFAULT_SOURCE}")
    return {c: sorted(by_class[c]) for c in sorted(by_class)}


# ------------------------------------------------------------------------------------------- planning


def class_names(n: int) -> list[str]:
    """ImageNet-like synset-style names ``n0000``, ``n0001``, ...."""
    width = max(4, len(str(n - 1)))
    return [f"n{k:0{width}d}" for k in range(n)]


def class_style(k: int, n_source: int, n_classes: int) -> ClassStyle:
    """Class ``k``: CIFAR class ``k % n_source``; its group ``k // n_source`` picks the tint hue and crop style."""
    group = k // n_source
    n_groups = math.ceil(n_classes / n_source)
    tint = colorsys.hsv_to_rgb(group / n_groups, 0.8, 1.0)
    return ClassStyle(k % n_source, (tint[0], tint[1], tint[2]), CROP_STYLES[group % len(CROP_STYLES)])


def split_counts(images: int, classes: int, val_fraction: float) -> list[tuple[int, int]]:
    """(train, val) image counts per class; the remainder of ``images / classes`` goes to the first classes."""
    counts = []
    for k in range(classes):
        n = images // classes + (1 if k < images % classes else 0)
        val = math.floor(n * val_fraction + 0.5)
        if val_fraction > 0:
            val = max(1, val)
        counts.append((n - val, val))
    return counts


def assign_sources(
    rng: np.random.Generator, sources: list[list[str]], wanted: list[int]
) -> tuple[list[list[str]], int]:
    """Source members for each output class; classes sharing a CIFAR class share one shuffled pool, used
    without repetition while it lasts (then cycled). Returns the members and how many were reused."""
    taken = [0] * len(sources)
    pools = [[pool[i] for i in rng.permutation(len(pool))] for pool in sources]
    out: list[list[str]] = []
    reused = 0
    for k, n in enumerate(wanted):
        c = k % len(sources)
        pool, start = pools[c], taken[c]
        out.append([pool[(start + j) % len(pool)] for j in range(n)])
        reused += max(0, start + n - max(start, len(pool)))
        taken[c] += n
    return out, reused


def draw_geometry(
    rng: np.random.Generator, ranges: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Output sizes (n, 2), crop boxes (n, 4: left, top, width, height fractions) and jitter factors (n, 3)
    for n images whose crop side fractions are drawn from the per-image ``ranges`` (n, 2)."""
    n = len(ranges)
    sizes = rng.integers(MIN_SIDE, MAX_SIDE + 1, size=(n, 2))
    side = ranges[:, 0] + (ranges[:, 1] - ranges[:, 0]) * rng.random(n)
    aspect = sizes[:, 0] / sizes[:, 1] * np.exp(rng.uniform(-ASPECT_WOBBLE, ASPECT_WOBBLE, n))
    width = np.minimum(1.0, side * np.sqrt(aspect))
    height = np.minimum(1.0, width / aspect)
    width = np.minimum(1.0, height * aspect)
    offsets = rng.random((n, 2)) * np.stack([1.0 - width, 1.0 - height], axis=1)
    crops = np.stack([offsets[:, 0], offsets[:, 1], width, height], axis=1)
    jitter = rng.uniform(1.0 - JITTER, 1.0 + JITTER, size=(n, 3))
    return sizes, crops, jitter


def make_plan(sources: dict[str, list[str]], *, images: int, classes: int, val_fraction: float, seed: int) -> Plan:
    """Draw every image's source, crop, size, jitter and shard position from ``seed``."""
    rng = np.random.default_rng(seed)
    pools = list(sources.values())
    names = class_names(classes)
    styles = [class_style(k, len(pools), classes) for k in range(classes)]
    counts = split_counts(images, classes, val_fraction)
    members, reused = assign_sources(rng, pools, [t + v for t, v in counts])
    rows: list[tuple[str, int, str]] = []  # (split, label, member) in (split, class, index) order
    for split_index, split in enumerate(SPLITS):
        for k, (n_train, _n_val) in enumerate(counts):
            picked = members[k][:n_train] if split_index == 0 else members[k][n_train:]
            rows.extend((split, k, m) for m in picked)
    ranges = np.array([styles[label].crop_range for _, label, _ in rows], dtype=np.float64).reshape(-1, 2)
    sizes, crops, jitter = draw_geometry(rng, ranges)
    width = max(6, len(str(len(rows) - 1)))
    specs = [
        ImageSpec(
            split=split,
            label=label,
            key=f"{names[label]}_{i:0{width}d}",
            member=member,
            crop=(float(crops[i, 0]), float(crops[i, 1]), float(crops[i, 2]), float(crops[i, 3])),
            size=(int(sizes[i, 0]), int(sizes[i, 1])),
            jitter=(float(jitter[i, 0]), float(jitter[i, 1]), float(jitter[i, 2])),
            tint=styles[label].tint,
        )
        for i, (split, label, member) in enumerate(rows)
    ]
    by_split: dict[str, list[ImageSpec]] = {}
    for split in SPLITS:
        chosen = [s for s in specs if s.split == split]
        by_split[split] = [chosen[i] for i in rng.permutation(len(chosen))]
    return Plan(names, list(sources), styles, by_split, reused)


# ------------------------------------------------------------------------------------------ rendering

_archive: zipfile.ZipFile | None = None


def open_source(path: str) -> None:
    """Pool initializer: open the source zip once per worker process."""
    global _archive
    _archive = zipfile.ZipFile(path)


def close_source() -> None:
    """Close the zip opened by :func:`open_source` in this process."""
    global _archive
    if _archive is not None:
        _archive.close()
        _archive = None


def recolour(pixels: np.ndarray, jitter: tuple[float, float, float], tint: tuple[float, float, float]) -> np.ndarray:
    """Brightness, contrast and saturation jitter, then a blend towards the tinted grey image; uint8 out."""
    x = pixels.astype(np.float32) / 255.0
    brightness, contrast, saturation = jitter
    x = x * brightness
    x = x.mean() + (x - x.mean()) * contrast
    grey = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    x = grey[..., None] + (x - grey[..., None]) * saturation
    x = (1.0 - TINT_STRENGTH) * x + TINT_STRENGTH * grey[..., None] * np.array(tint, dtype=np.float32)
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def render(spec: ImageSpec) -> bytes:
    """The JPEG bytes of one image: recoloured source, cropped and upscaled to ``spec.size`` (bicubic)."""
    assert _archive is not None, "open_source() first"
    with Image.open(io.BytesIO(_archive.read(spec.member))) as im:
        small = Image.fromarray(recolour(np.asarray(im.convert("RGB")), spec.jitter, spec.tint))
    w, h = small.size
    left, top, cw, ch = spec.crop
    box = (left * w, top * h, (left + cw) * w, (top + ch) * h)
    big = small.resize(spec.size, resample=Image.Resampling.BICUBIC, box=box)
    buf = io.BytesIO()
    big.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def rendered(specs: Sequence[ImageSpec], source: str, workers: int) -> Iterator[bytes]:
    """The JPEG bytes of ``specs`` in order, from a pool of ``workers`` processes (in this one when 1)."""
    if workers <= 1:
        open_source(source)
        try:
            yield from map(render, specs)
        finally:
            close_source()
        return
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
    with ctx.Pool(workers, initializer=open_source, initargs=(source,)) as pool:
        yield from pool.imap(render, specs, chunksize=CHUNKSIZE)


# -------------------------------------------------------------------------------------------- writing


class ShardWriter:
    """Writes ``<prefix>-000000.tar``, ... with ``size`` samples each (``<key>.jpg`` + ``<key>.cls``)."""

    def __init__(self, directory: Path, prefix: str, size: int) -> None:
        self.directory, self.prefix, self.size = directory, prefix, size
        self.shards: list[int] = []  # samples per finished or open shard
        self._tar: tarfile.TarFile | None = None

    def add(self, key: str, jpeg: bytes, label: int) -> None:
        """Append one sample, starting a new shard when the open one is full."""
        if self._tar is None or self.shards[-1] >= self.size:
            self.close()
            path = self.directory / f"{self.prefix}-{len(self.shards):06d}.tar"
            self._tar = tarfile.open(path, "w", format=tarfile.GNU_FORMAT)
            self.shards.append(0)
        self._member(f"{key}.jpg", jpeg)
        self._member(f"{key}.cls", str(label).encode("ascii"))
        self.shards[-1] += 1

    def _member(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        assert self._tar is not None
        self._tar.addfile(info, io.BytesIO(data))

    def close(self) -> None:
        """Finish the open shard, if any."""
        if self._tar is not None:
            self._tar.close()
            self._tar = None

    def pattern(self) -> str:
        """The brace pattern of the shards, e.g. ``train-{000000..000017}.tar``."""
        return f"{self.prefix}-{{000000..{len(self.shards) - 1:06d}}}.tar"


def write_images(plan: Plan, root: Path, source: str, workers: int, shard_size: int) -> dict[str, ShardWriter]:
    """Render every image of ``plan`` and write it under ``root/folder`` and into ``root/wds`` shards."""
    wds = root / "wds"
    wds.mkdir(parents=True)
    for split in SPLITS:
        if plan.images[split]:
            for name in plan.classes:
                (root / "folder" / split / name).mkdir(parents=True)
    writers = {split: ShardWriter(wds, split, shard_size) for split in SPLITS}
    order = [spec for split in SPLITS for spec in plan.images[split]]
    try:
        with tqdm(total=len(order), desc=PROG, unit="img", dynamic_ncols=True) as bar:
            for spec, jpeg in zip(order, rendered(order, source, workers)):
                (root / "folder" / spec.split / plan.classes[spec.label] / f"{spec.key}.jpg").write_bytes(jpeg)
                writers[spec.split].add(spec.key, jpeg, spec.label)
                bar.update()
    finally:
        for writer in writers.values():
            writer.close()
    (wds / "classes.txt").write_text("".join(f"{name}\n" for name in plan.classes))
    return writers


def plural(n: int, word: str) -> str:
    """``1 shard``, ``2 shards``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tree_bytes(root: Path) -> int:
    """Total size of the files under ``root``."""
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def readme_text(plan: Plan, writers: dict[str, ShardWriter], args: argparse.Namespace, command: str,
                source_sha: str) -> str:
    """``README.md`` of the dataset: what it is, how it was made, how to load it."""
    n = {split: len(plan.images[split]) for split in SPLITS}
    shards = "\n".join(
        f"    wds/{w.pattern()}   {plural(len(w.shards), 'shard')}, {n[s]} samples" for s, w in writers.items()
        if w.shards
    )
    crop_styles = ", ".join(f"{lo:.2f}-{hi:.2f}" for lo, hi in CROP_STYLES)
    n_source = len(plan.source_classes)

    return f"""# ImageNet-like dataset derived from CIFAR-10 (JPEG copy)

{len(plan.classes)} classes ({plan.classes[0]} .. {plan.classes[-1]}), {n["train"]} train + {n["val"]} val JPEG
images of {MIN_SIDE}-{MAX_SIDE} px a side (width and height drawn independently), made by
`benchmarks/make_imagenet_like.py` in the trickbox repository:

    {command}

Options in full: `--images {args.images} --classes {args.classes} --val-fraction {args.val_fraction}
--shard-size {args.shard_size} --seed {args.seed} --source {args.source}`.
The output depends only on those (not on `--workers`), for a given Pillow build
(this one: Pillow {PIL.__version__}).

Counts: {n["train"]} train, {n["val"]} val, {len(plan.classes)} classes.

## Layout

    folder/train/<class>/<key>.jpg    ImageFolder layout (e.g. torchvision.datasets.ImageFolder)
    folder/val/<class>/<key>.jpg
{shards}
    wds/classes.txt                   class names; line i is class index i

Each WebDataset sample is `<key>.jpg` + `<key>.cls` (the class index as ASCII text); the same images as
`folder/`, shuffled across shards with the seed. Load with e.g.
`webdataset.WebDataset("wds/{writers["train"].pattern()}").decode("pil").to_tuple("jpg", "cls")`.

## How the images were made

- Source: `{args.source}`
  (sha256 `{source_sha}`), its `train/` images only (`test/` is left untouched).
- Class k shows source class k % {n_source} (of {", ".join(plan.source_classes)}).
  Within one source class no source image is used twice while there are enough
  ({"none was reused" if plan.reused_sources == 0
    else f"{plan.reused_sources} were reused"}), so train and val images come from different source images.
- Each image: brightness, contrast and saturation jitter of +-{JITTER:.0%}; a {TINT_STRENGTH:.0%} blend towards a
  tinted grey copy, the tint's hue fixed per group k // {n_source} of classes; a random sub-rectangle of the
  32x32 source (side fraction per group, alternating {crop_styles}; crop aspect close to the output's);
  bicubic upscaling to the drawn width x height; JPEG quality {JPEG_QUALITY}.
- The classes are learnable in principle (CIFAR content + group tint and crop scale), but this is no
  stand-in for ImageNet's content or difficulty: use it for data loading and throughput benchmarks.
  The JPEGs are smooth upscales, a few KiB each (ImageNet's average ~110 KiB), so decoding is cheaper
  per pixel than on ImageNet.
"""


# ---------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; misuse exits 2 with argparse's usage and one error line."""
    p = argparse.ArgumentParser(prog="make_imagenet_like.py", description=__doc__.splitlines()[0])
    p.add_argument("out_dir", metavar="OUT_DIR", help="where to write the dataset (must not exist or be empty)")
    p.add_argument("--images", type=int, default=20000, help="images in all, train + val (default: 20000)")
    p.add_argument("--classes", type=int, default=100, help="classes (default: 100)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of each class for val/ (default: 0.1)")
    p.add_argument("--shard-size", type=int, default=1000, help="samples per WebDataset shard (default: 1000)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same dataset (default: 0)")
    p.add_argument("--source", default=str(DEFAULT_SOURCE),
                   help=f"CIFAR-style ImageFolder zip (default: {DEFAULT_SOURCE})")
    p.add_argument("--workers", type=int, default=default_workers(), help="processes (default: the usable CPUs)")
    args = p.parse_args(argv)
    if args.images < 1:
        p.error(f"--images must be >= 1, got {args.images}")
    if args.classes < 1:
        p.error(f"--classes must be >= 1, got {args.classes}")
    if not 0.0 <= args.val_fraction < 1.0:
        p.error(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    per_class = 2 if args.val_fraction > 0 else 1
    if args.images < per_class * args.classes:
        p.error(f"--images {args.images} is too few for {args.classes} classes: give at least "
                f"{per_class * args.classes}")
    if args.shard_size < 1:
        p.error(f"--shard-size must be >= 1, got {args.shard_size}")
    if args.workers < 1:
        p.error(f"--workers must be >= 1, got {args.workers}")
    return args


def default_workers() -> int:
    """The CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def check_out_dir(out: Path) -> None:
    """Refuse an OUT_DIR that is a file or a non-empty directory."""
    if out.is_dir() and any(out.iterdir()):
        raise UsageError(f"OUT_DIR {out} exists and is not empty; give a new or empty directory")
    if out.exists() and not out.is_dir():
        raise UsageError(f"OUT_DIR {out} exists and is not a directory")


def build(args: argparse.Namespace, command: str) -> tuple[Plan, dict[str, ShardWriter], int]:
    """Make the dataset in a hidden sibling of OUT_DIR and rename it into place; return (plan, writers, bytes)."""
    out = Path(args.out_dir)
    check_out_dir(out)
    source = Path(args.source)
    if not source.is_file() or not zipfile.is_zipfile(source):
        raise UsageError(f"--source {args.source} is not a zip file; give the CIFAR-10 JPEG zip ({DEFAULT_SOURCE})")
    with zipfile.ZipFile(source) as archive:
        pools = list_source(archive, args.source)
    plan = make_plan(pools, images=args.images, classes=args.classes, val_fraction=args.val_fraction, seed=args.seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        writers = write_images(plan, tmp, str(source), args.workers, args.shard_size)
        (tmp / "README.md").write_text(readme_text(plan, writers, args, command, sha256(source)))
        total = tree_bytes(tmp)
        check_out_dir(out)  # nothing appeared there meanwhile
        if out.is_dir():
            out.rmdir()
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return plan, writers, total


def summary(out: str, plan: Plan, writers: dict[str, ShardWriter], total: int, seconds: float) -> list[str]:
    """The lines printed at the end: counts, bytes, shard patterns."""
    n = {split: len(plan.images[split]) for split in SPLITS}
    lines = [
        f"wrote {out}: {len(plan.classes)} classes, {n['train']} train + {n['val']} val images, "
        f"{total:,} bytes ({total / 2**20:.1f} MiB, folder/ and wds/ together) in {seconds:.1f} s",
        f"  folder/train/<class>/*.jpg ({n['train']}), folder/val/<class>/*.jpg ({n['val']})",
    ]
    for split, writer in writers.items():
        if writer.shards:
            lines.append(f"  wds/{writer.pattern()} ({plural(len(writer.shards), 'shard')}, {n[split]} samples)")
    lines.append("  wds/classes.txt, README.md")
    if plan.reused_sources:
        lines.append(f"  note: {plan.reused_sources} source images were used twice or more (not enough CIFAR images)")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Run the command line; 0 on success, 2 on a bad option, source or OUT_DIR, 1 on an I/O failure."""
    given = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(given)
    command = shlex.join(["python", "benchmarks/make_imagenet_like.py", *given])
    start = time.perf_counter()
    try:
        plan, writers, total = build(args, command)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(summary(args.out_dir, plan, writers, total, time.perf_counter() - start)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
