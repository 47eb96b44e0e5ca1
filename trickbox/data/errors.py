"""The one exception type of :mod:`trickbox.data`."""
from __future__ import annotations


class DataError(ValueError):
    """Bad data configuration or input; the message is one line naming the bad value and the fix."""
