"""Decoding only the pixels a crop needs (``data.fast_decode``, the stream path's resized crop).

A JPEG can be decoded at 1/2, 1/4 or 1/8 of its size in the DCT domain, for much less work than the whole image.
The training crop is timm's RandomResizedCrop: its box is drawn on the full image's size (timm's own ``get_params``,
the same seeded draws as a full decode), then the image is decoded at the largest of those reductions that still
gives the box at least the output's pixels, the box is mapped into the smaller image and resampled from it. At the
image's own scale the crop is timm's call itself. Evaluation decodes at the largest reduction that keeps the
shorter side at least the resize target, then runs timm's evaluation transform unchanged.

simplejpeg (libjpeg-turbo, ``pip install trickbox[fast]``) decodes when it is installed; Pillow's ``draft`` does
otherwise. Other formats, and JPEGs a decoder refuses, are decoded whole by Pillow, as without fast decoding.
"""
from __future__ import annotations

import functools
import math
import random
from typing import Any

from PIL import Image

REDUCTIONS = (8, 4, 2, 1)
"""The DCT-domain reductions tried, largest first."""


class Encoded:
    """An image not yet decoded: Pillow's lazy handle (size and format, no pixels) and the file's bytes."""

    def __init__(self, image: Image.Image, data: bytes) -> None:
        self.image, self.data = image, data

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


@functools.lru_cache(maxsize=1)
def _simplejpeg() -> Any:
    try:
        import simplejpeg
    except ImportError:
        return None
    return simplejpeg


def decoder() -> str:
    """Which library decodes at a reduction: ``simplejpeg`` when installed, else ``pillow``."""
    return "simplejpeg" if _simplejpeg() is not None else "pillow"


def reduction(width: float, height: float, need_w: float, need_h: float) -> int:
    """The largest reduction that keeps ``width x height`` pixels at least ``need_w x need_h``."""
    return next((r for r in REDUCTIONS if width / r >= need_w and height / r >= need_h), 1)


def decode(source: Encoded | Image.Image, r: int) -> Image.Image:
    """``source`` as an RGB image, decoded at reduction ``r`` where it is a JPEG (about ``1/r`` of each side)."""
    if not isinstance(source, Encoded):
        return source.convert("RGB")
    img = source.image
    if r > 1 and img.format == "JPEG":  # whole, Pillow's decoder is as fast and needs no copy
        sj = _simplejpeg()
        if sj is not None:
            w, h = img.size
            try:
                array = sj.decode_jpeg(source.data, colorspace="RGB", min_factor=r, min_height=math.ceil(h / r),
                                       min_width=math.ceil(w / r))
                return Image.fromarray(array)
            except ValueError:
                pass  # a JPEG libjpeg-turbo refuses (e.g. CMYK): Pillow below
        img.draft("RGB", (img.width // r, img.height // r))  # Pillow reduces by r where both sides allow it
    return img.convert("RGB")


def from_reduced(img: Image.Image, width: int, box: tuple[float, float, float, float], out: tuple[int, int],
                 interpolation: Any) -> Image.Image:
    """``box`` of the full ``width``-wide image, resampled to ``out`` (w, h) from ``img``, its reduced decode (each
    of its pixels ``r x r`` of the full image's)."""
    from torchvision.transforms import InterpolationMode

    r = round(width / img.width)
    resample = Image.BICUBIC if interpolation == InterpolationMode.BICUBIC else Image.BILINEAR
    return img.resize(out, resample, box=tuple(v / r for v in box))


class FastResizedCrop:
    """timm's RandomResizedCrop (``crop``: a ``RandomResizedCropAndInterpolation``) on an :class:`Encoded` image,
    decoded at the reduction its box allows."""

    def __init__(self, crop: Any) -> None:
        self.crop = crop

    def __call__(self, source: Encoded | Image.Image) -> Image.Image:
        from torchvision.transforms import functional as F

        crop, (width, height) = self.crop, source.size
        lazy = source.image if isinstance(source, Encoded) else source  # its size without its pixels
        i, j, h, w = crop.get_params(lazy, crop.scale, crop.ratio)  # timm's draws, on the full size
        interp = random.choice(crop.interpolation) if isinstance(crop.interpolation, (tuple, list)) \
            else crop.interpolation
        out_h, out_w = crop.size
        img = decode(source, reduction(w, h, out_w, out_h))
        if img.size == (width, height):
            return F.resized_crop(img, i, j, h, w, crop.size, interp)  # timm's own call
        return from_reduced(img, width, (j, i, j + w, i + h), (out_w, out_h), interp)

    def __repr__(self) -> str:
        return f"FastResizedCrop({self.crop!r})"


class FastEvalDecode:
    """The first stage of timm's evaluation transform, torchvision's ``Resize`` (``resize``): decode at the largest
    reduction that keeps the resized sides' pixels, then resize to the size the full image would get."""

    def __init__(self, resize: Any) -> None:
        self.resize = resize

    def __call__(self, source: Encoded | Image.Image) -> Image.Image:
        width, height = source.size
        size = self.resize.size
        if not isinstance(size, int) and len(size) == 1:
            size = size[0]
        if isinstance(size, int):  # the shorter side to size, the longer in proportion (torchvision's rule)
            short, long = sorted((width, height))
            out = (size, int(size * long / short)) if width <= height else (int(size * long / short), size)
        else:
            out = (size[1], size[0])
        img = decode(source, reduction(width, height, *out))
        if img.size == (width, height):
            return self.resize(img)  # torchvision's own call
        return from_reduced(img, width, (0, 0, width, height), out, self.resize.interpolation)

    def __repr__(self) -> str:
        return f"FastEvalDecode({self.resize!r})"


class EncodedCompose:
    """A transform whose first stage takes an :class:`Encoded` image: the stream path hands it one."""

    takes_encoded = True

    def __init__(self, first: Any, rest: Any) -> None:
        self.first, self.rest = first, rest

    @property
    def transforms(self) -> list[Any]:
        """Its stages, as torchvision's ``Compose`` lists them."""
        return [self.first, self.rest]

    def __call__(self, source: Encoded | Image.Image) -> Any:
        return self.rest(self.first(source))

    def __repr__(self) -> str:
        return f"EncodedCompose({self.first!r}, {self.rest!r})"
