"""The exceptions trickbox raises on purpose. Each message is one line that names the bad value and the fix."""
from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is wrong. The message is one line that names the value and the fix."""


class DataError(ConfigError):
    """Bad data configuration or input (a missing split, an unreadable image, a shard pattern that matches nothing)."""


class NonFiniteError(FloatingPointError):
    """A loss, λ, teacher output or weight is NaN or infinite; the step is not applied."""


class OutputError(RuntimeError):
    """A file of the run could not be written (a full disk, a read-only folder); says what is intact and how to go on."""
