"""The exceptions trickbox raises on purpose. Each message is one line that names the bad value and the fix."""
from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is wrong. The message is one line that names the value and the fix."""


class DataError(ConfigError):
    """Bad data configuration or input (a missing split, an unreadable image, a shard pattern that matches nothing)."""


class NonFiniteError(FloatingPointError):
    """A loss, λ, teacher output or weight is NaN or infinite; the step is not applied."""


class OutputError(RuntimeError):
    """A file of the run could not be written (a full disk, a read-only folder); says what is intact and how to go
    on."""


def on_every_rank(exc: BaseException) -> BaseException:
    """Mark ``exc`` as raised by every process after they agreed on it (one all-reduce): the command line says it
    once, on the main process, instead of once per process."""
    exc.on_every_rank = True  # type: ignore[attr-defined]
    return exc


def first_line(e: BaseException) -> str:
    """What an exception says, in one line (its type when it says nothing)."""
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def warn(message: str) -> None:
    """One line on stderr, ``trickbox: warning: …``, whatever the message holds (a file name with a newline is shown
    with its escapes): Python's warning format takes two lines and names trickbox's source instead of the problem."""
    import sys

    print(f"trickbox: warning: {' '.join(message.splitlines())}", file=sys.stderr, flush=True)
