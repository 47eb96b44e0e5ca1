"""``load_dataset``: a :class:`DataConfig` in, split uint8 tensors out."""
from __future__ import annotations

import torch

from .arrays import DatasetArrays, channel_stats
from .cifar import cifar_source
from .config import DataConfig
from .digits import digits_source
from .imagefolder import imagefolder_source
from .source import Source
from .splits import add_label_noise, plan_splits


def open_source(cfg: DataConfig, *, progress: bool = True) -> Source:
    """The :class:`Source` named by ``cfg.name`` (labels now, images on ``read``)."""
    if cfg.name == "digits":
        return digits_source()
    if cfg.name == "imagefolder":
        return imagefolder_source(cfg, progress=progress)
    return cifar_source(cfg)


def load_dataset(cfg: DataConfig, *, progress: bool = True) -> DatasetArrays:
    """Load, split (val, then train subset, then test cap), add label noise and compute train mean/std.

    Only the selected images are read where the source allows it; ``progress`` shows a decode bar on stderr.
    """
    cfg.validate()
    source = open_source(cfg, progress=progress)
    try:
        num_classes = len(source.classes)
        plan = plan_splits(source.train_y, source.test_y, num_classes, cfg)
        train_part, test_x = source.read(torch.cat([plan.val, plan.train]), plan.test)
    finally:
        source.close()
    n_val = len(plan.val)
    val_x, train_x = train_part[:n_val].contiguous(), train_part[n_val:].contiguous()
    train_y_clean = source.train_y[plan.train]
    train_y = train_y_clean.clone()
    if cfg.label_noise > 0:
        train_y = add_label_noise(train_y_clean, cfg.label_noise, num_classes, cfg.noise_seed)
    mean, std = channel_stats(train_x)
    return DatasetArrays(
        name=cfg.name,
        classes=list(source.classes),
        train_x=train_x,
        train_y=train_y,
        train_y_clean=train_y_clean,
        val_x=val_x,
        val_y=source.train_y[plan.val],
        test_x=test_x.contiguous(),
        test_y=source.test_y[plan.test],
        mean=mean,
        std=std,
    )
