"""What every dataset source hands to :func:`trickbox.data.load_dataset`: labels first, images on demand."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import Tensor

ReadFn = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
"""``(train_indices, test_indices) -> (train_images, test_images)``, uint8 ``(n, C, H, W)``."""


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class Source:
    """Class names and labels of a dataset's train and test splits, and a reader of the images.

    Splits are planned from the labels alone, so a source may decode only the images it is asked for.
    """

    classes: list[str]
    train_y: Tensor
    test_y: Tensor
    read: ReadFn
    close: Callable[[], None] = field(default=_nothing)


def in_memory_source(classes: list[str], train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor) -> Source:
    """A :class:`Source` over images already in memory."""

    def read(train_idx: Tensor, test_idx: Tensor) -> tuple[Tensor, Tensor]:
        return train_x[train_idx], test_x[test_idx]

    return Source(classes=classes, train_y=train_y, test_y=test_y, read=read)
