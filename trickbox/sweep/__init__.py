"""Optuna sweeps over trickbox runs, and the trial helper for a user's own script.

``trickbox sweep SPEC``: :mod:`.spec` reads the spec, :mod:`.workers` starts and
supervises the worker processes, :mod:`.study` is a worker's handle on the
study (Optuna's ``study.optimize`` one trial at a time, under the study lock of
:mod:`.storage`), :mod:`.trials` runs each trial (trickbox's loop, or your script),
:mod:`.distributed` lets the ranks of one launch run a trial together, and
``trickbox report STUDY`` is :mod:`trickbox.sweep.report`. Inside your own script run by
``trickbox sweep SPEC --script train.py``, :func:`current_trial` is the trial (:mod:`.helper` shows how).
"""
from __future__ import annotations

from .script import NoTrial, SweepTrial, current_trial

trial = current_trial
"""Alias of :func:`current_trial`."""

__all__ = ["NoTrial", "SweepTrial", "current_trial", "trial"]
