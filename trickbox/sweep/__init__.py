"""Optuna sweeps over trickbox runs, and the trial helper for a user's own script.

``trickbox sweep SPEC`` (see :mod:`trickbox.sweep.spec` for the spec file,
:mod:`trickbox.sweep.worker` for the workers, :mod:`trickbox.sweep.storage`
for the storage, the exact trial count and retries,
:mod:`trickbox.sweep.distributed` for trials across several processes) and
``trickbox report STUDY`` (:mod:`trickbox.sweep.report`).

Inside your own script, run by ``trickbox sweep SPEC --script train.py``::

    t = trickbox.sweep.current_trial()      # does nothing outside a sweep
    tricks = trickbox.load_tricks(t.suggest({"mixup": {"alpha": 0.2}}))
    ...
    if t.report(val_accuracy, epoch + 1):
        break
    t.finish(val_accuracy)
"""
from __future__ import annotations

from .helper import NoTrial, SweepTrial, current_trial

trial = current_trial
"""Alias of :func:`current_trial`."""

__all__ = ["NoTrial", "SweepTrial", "current_trial", "trial"]
