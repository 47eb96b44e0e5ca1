"""data.fast_decode on photo-like JPEGs: timm's crop boxes and draws, decoded at the reduction the box allows;
within 30 dB PSNR of timm's full decode, the same per-channel statistics over a 1,000-image epoch, and timm's own
output where no reduction applies (PNG, fast_decode=false, boxes that need every pixel)."""
from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trickbox.data import DataConfig, decoding
from trickbox.data.streaming import read_image, seed_sample, transforms

SIZE = 128


def _cfg(**kw) -> DataConfig:
    return DataConfig(name="imagefolder", root="/unused", crop="resized", image_size=SIZE, flip=False, **kw)


def _pair(**kw):
    """(fast, full) training transforms of the same settled config: only fast_decode differs."""
    fast, _ = transforms(_cfg(fast_decode=True, **kw), (0.5,) * 3, (0.25,) * 3)
    full, _ = transforms(_cfg(fast_decode=False, **kw), (0.5,) * 3, (0.25,) * 3)
    return fast, full


def _read(path: Path, tf) -> np.ndarray:
    image, bad = read_image(str(path), tf)
    assert not bad, bad
    return np.asarray(image)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


@pytest.fixture(scope="module")
def files(photo_like) -> list[Path]:
    return sorted((photo_like / "train").rglob("*.jpg"))


def test_same_boxes_and_draws_as_timm(files, monkeypatch):
    """Every sample's box is timm's: the same get_params result from the same seeded draws."""
    from timm.data.transforms import RandomResizedCropAndInterpolation as RRC

    boxes: list[tuple[int, ...]] = []
    original = RRC.get_params

    def record(img, scale, ratio):
        box = original(img, scale, ratio)
        boxes.append(box)
        return box

    monkeypatch.setattr(RRC, "get_params", staticmethod(record))
    fast, full = _pair()
    for path in files[:200]:
        after = []
        for tf in (fast, full):
            seed_sample(0, "train", 3, path.name)
            image = _read(path, tf)
            assert image.shape == (3, SIZE, SIZE)
            after.append((random.random(), np.random.random()))
        assert after[0] == after[1]  # the fast path draws no more and no less
    assert boxes[0::2] == boxes[1::2] and len(boxes) == 400


def test_fast_crops_stay_within_30_db_and_reductions_happen(files, monkeypatch):
    used: list[int] = []
    original = decoding.decode
    monkeypatch.setattr(decoding, "decode", lambda source, r: (used.append(r), original(source, r))[1])
    fast, full = _pair()
    worst = float("inf")
    for path in files[:200]:
        outs = []
        for tf in (fast, full):
            seed_sample(0, "train", 0, path.name)
            outs.append(_read(path, tf))
        worst = min(worst, _psnr(*outs))
    assert worst >= 30.0, worst
    assert sum(r > 1 for r in used) >= 50 and 1 in used, sorted(set(used))  # both kinds of box were drawn


def test_a_1000_image_epoch_has_the_same_channel_statistics(files):
    fast, full = _pair()
    stats = []
    for tf in (fast, full):
        total = np.zeros(3)
        square = np.zeros(3)
        for path in files[:1000]:
            seed_sample(0, "train", 1, path.name)
            x = _read(path, tf).reshape(3, -1).astype(np.float64)
            total += x.mean(1)
            square += (x ** 2).mean(1)
        mean = total / len(files[:1000])
        stats.append((mean, np.sqrt(square / len(files[:1000]) - mean ** 2)))
    assert len(files) >= 1000
    (m_fast, s_fast), (m_full, s_full) = stats
    assert np.all(np.abs(m_fast / m_full - 1) < 0.01) and np.all(np.abs(s_fast / s_full - 1) < 0.01), stats


def test_evaluation_decodes_at_the_resize_target_and_matches_closely(files):
    _, fast_eval = transforms(_cfg(fast_decode=True), (0.5,) * 3, (0.25,) * 3)
    _, full_eval = transforms(_cfg(fast_decode=False), (0.5,) * 3, (0.25,) * 3)
    for path in files[:40]:
        a, b = _read(path, fast_eval), _read(path, full_eval)
        assert a.shape == b.shape == (3, SIZE, SIZE) and _psnr(a, b) >= 30.0


def test_png_and_fast_decode_false_give_timms_pixels(files, tmp_path):
    """No DCT domain in a PNG: the same pixels as timm's transform of the decoded image."""
    png = tmp_path / "a.png"
    Image.open(files[0]).save(png)
    fast, full = _pair()
    outs = []
    for tf in (fast, full):
        seed_sample(0, "train", 0, "a")
        outs.append(_read(png, tf))
    assert np.array_equal(*outs)
    from timm.data import create_transform

    timm_tf = create_transform(input_size=(3, SIZE, SIZE), is_training=True, hflip=0.0, color_jitter=0.0,
                               use_prefetcher=True, interpolation="bilinear")
    seed_sample(0, "train", 0, "a")
    mine = _read(files[0], full)
    seed_sample(0, "train", 0, "a")
    with Image.open(files[0]) as img:
        theirs = np.asarray(timm_tf(img.convert("RGB")))
    assert np.array_equal(mine, theirs)


def test_reduction_and_a_refused_jpeg_fall_back_to_pillow(files):
    assert decoding.reduction(400, 350, 128, 128) == 2 and decoding.reduction(400, 350, 50, 40) == 8
    assert decoding.reduction(100, 100, 128, 128) == 1
    raw = files[0].read_bytes()
    with Image.open(io.BytesIO(raw)) as img:
        halved = (-(-img.width // 2), -(-img.height // 2))
        assert decoding.decode(decoding.Encoded(img, raw), 2).size == halved
    cmyk = io.BytesIO()
    Image.open(files[0]).convert("CMYK").save(cmyk, format="JPEG")
    with Image.open(io.BytesIO(cmyk.getvalue())) as img:
        assert decoding.decode(decoding.Encoded(img, cmyk.getvalue()), 2).mode == "RGB"


def test_without_simplejpeg_pillows_draft_reduces_and_stays_within_30_db(files, monkeypatch):
    monkeypatch.setattr(decoding, "_simplejpeg", lambda: None)
    assert decoding.decoder() == "pillow"
    raw = files[0].read_bytes()
    with Image.open(io.BytesIO(raw)) as img:
        halved = (-(-img.width // 2), -(-img.height // 2))  # before the decode: Pillow's draft shrinks img
        assert decoding.decode(decoding.Encoded(img, raw), 2).size == halved
    fast, full = _pair()
    _, fast_eval = transforms(_cfg(fast_decode=True), (0.5,) * 3, (0.25,) * 3)
    _, full_eval = transforms(_cfg(fast_decode=False), (0.5,) * 3, (0.25,) * 3)
    for path in files[:60]:
        outs = []
        for tf in (fast, full):
            seed_sample(0, "train", 2, path.name)
            outs.append(_read(path, tf))
        assert _psnr(*outs) >= 30.0 and _psnr(_read(path, fast_eval), _read(path, full_eval)) >= 30.0
