"""``trickbox list``: every trick with its parameters; a closed pipe ends it quietly."""
from __future__ import annotations

import subprocess
import sys

from ..conftest import subprocess_env


def test_list_into_a_pipe_that_closes_early_has_no_traceback():
    proc = subprocess.run(f"{sys.executable} -m trickbox list | head -n 1", shell=True, env=subprocess_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.count("\n") == 1
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr


def test_list_says_when_plugins_were_not_loaded(cli, monkeypatch):
    monkeypatch.setenv("TRICKBOX_DISABLE_PLUGIN_AUTOLOAD", "1")
    proc = cli("list")
    import re

    # (cutmix, and any plugin another test is installing at the same moment, e.g. the scaffold's probe)
    assert proc.returncode == 0 and re.search(r"installed plugins not loaded \([^)]*\bcutmix\b", proc.stdout)
