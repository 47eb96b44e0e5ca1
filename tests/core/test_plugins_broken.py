"""Broken third-party plugins are reported by name and reason and leave the others working; plugin autoload can
be switched off and single plugins blocked.

Every injected fault is appended to a JSON-lines log (the ``fault`` fixture) so that the numbers in
``docs/reliability.md`` come from a test run.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from trickbox.api import load_tricks
from trickbox.cli import main as cli_main
from trickbox.config import load_config
from trickbox.loop import train
from trickbox.registry import Catalog, discover, hook_problems
from trickbox.trick import ConfigError, Trick, hookimpl

from ..conftest import SMALL_RUN_ANY_TRACKER as SMALL
from ..conftest import subprocess_env

# -- plugins --------------------------------------------------------------------
FAKE_PLUGINS = '''
from trickbox import Trick, Param, hookimpl


class Good(Trick):
    name = "fakegood"
    summary = "a well-behaved third-party trick"
    params = (Param("scale", float, 1.0, low=0, low_open=True),)

    @hookimpl
    def trickbox_transform_batch(self, batch, ctx):
        return batch.replace(x=batch.x * self.scale)


class BadHook(Trick):
    name = "fakebadhook"

    @hookimpl
    def trickbox_transfrom_batch(self, batch, ctx):
        return None


class BadArg(Trick):
    name = "fakebadarg"

    @hookimpl
    def trickbox_loss(self, logits, batch, ctx, optimizer):
        return None
'''


@pytest.fixture
def plugin_site(tmp_path) -> Path:
    """A third-party distribution 'tbx-fake-plugins' (one good trick, three broken ones), installed by path only."""
    site = tmp_path / "site"
    (site / "tbx_fake_plugins").mkdir(parents=True)
    (site / "tbx_fake_plugins" / "__init__.py").write_text(FAKE_PLUGINS)
    (site / "tbx_fake_broken.py").write_text("import a_module_that_does_not_exist_4711\n")
    info = site / "tbx_fake_plugins-0.3.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tbx-fake-plugins\nVersion: 0.3.0\n")
    (info / "entry_points.txt").write_text(
        "[trickbox.tricks]\nfakegood = tbx_fake_plugins:Good\nfakebroken = tbx_fake_broken:Broken\n"
        "fakebadhook = tbx_fake_plugins:BadHook\nfakebadarg = tbx_fake_plugins:BadArg\n"
    )
    return site


@pytest.mark.slow
def test_trickbox_list_reports_broken_plugins_by_name_and_reason(tmp_path, plugin_site, fault):
    fault("broken third-party plugins (import error, bad hook name, bad hook argument)")
    res = subprocess.run([sys.executable, "-m", "trickbox", "list"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120,
                         env=subprocess_env(PYTHONPATH=str(plugin_site)))
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    assert "fakegood  (tbx-fake-plugins 0.3.0)  a well-behaved third-party trick" in out
    assert "! fakebroken (tbx-fake-plugins) not loaded: import failed: ModuleNotFoundError" in out
    assert "a_module_that_does_not_exist_4711" in out
    assert ("! fakebadhook (tbx-fake-plugins) not loaded: hook trickbox_transfrom_batch does not exist; did you mean "
            "'trickbox_transform_batch'?") in out
    assert "! fakebadarg (tbx-fake-plugins) not loaded: hook trickbox_loss takes optimizer" in out
    for builtin in ("sgdr", "label_smoothing", "distillation", "mixup", "noise"):
        assert f"\n{builtin}  (trickbox " in "\n" + out


def test_broken_plugins_leave_the_others_working(tmp_path, plugin_site, monkeypatch, request):
    monkeypatch.syspath_prepend(str(plugin_site))
    cat = discover()
    assert {b.name for b in cat.broken} >= {"fakebroken", "fakebadhook", "fakebadarg"}
    with pytest.raises(ConfigError, match="trick 'fakebadarg' from tbx-fake-plugins could not be loaded: hook "
                                          "trickbox_loss takes optimizer"):
        cat.get("fakebadarg")
    cfg = load_config([], [*SMALL, "train.tracker=none", f"train.out_dir={tmp_path}", "train.run_name=ok",
                           "tricks.fakegood.scale=0.5", "tricks.label_smoothing.eps=0.1"])
    result = train(cfg, tricks=load_tricks(cfg.tricks, block=cfg.plugins.block))
    assert result.steps > 0 and result.test["top1"] > 0


def test_autoload_off_keeps_only_builtins(plugin_site, monkeypatch, capsys, fault):
    fault("plugin autoload switched off")
    monkeypatch.syspath_prepend(str(plugin_site))
    assert "fakegood" in discover().tricks
    monkeypatch.setenv("TRICKBOX_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert cli_main(["list"]) == 0
    out = capsys.readouterr().out
    # neither the good plugin nor the broken ones are even imported: no trick line, no "not loaded" reason for them
    assert not [line for line in out.splitlines() if line.startswith(("fake", "! fake"))]
    assert "installed plugins not loaded (" in out and "fakegood" in out
    for builtin in ("sgdr", "label_smoothing", "distillation", "mixup", "noise"):
        assert f"\n{builtin}  (trickbox " in "\n" + out
    with pytest.raises(ConfigError, match="unknown trick 'fakegood'"):
        load_tricks(load_config([], ["tricks.fakegood.scale=0.5"]).tricks)


def test_single_plugins_can_be_blocked(plugin_site, monkeypatch, capsys, fault):
    fault("plugins blocked by TRICKBOX_BLOCK and plugins.block")
    monkeypatch.syspath_prepend(str(plugin_site))
    monkeypatch.setenv("TRICKBOX_BLOCK", "fakegood, fakebroken")
    assert cli_main(["list"]) == 0
    out = capsys.readouterr().out
    assert "- fakegood blocked" in out and "- fakebroken blocked" in out
    assert "fakegood  (" not in out and "! fakebroken" not in out and "mixup  (trickbox" in out
    with pytest.raises(ConfigError, match="trick 'fakegood' is blocked"):
        load_tricks(load_config([], ["tricks.fakegood.scale=0.5"]).tricks)
    monkeypatch.delenv("TRICKBOX_BLOCK")
    cfg = load_config([], ["plugins.block=[fakegood, mixup]", "tricks.mixup.alpha=0.2"])
    with pytest.raises(ConfigError, match="trick 'mixup' is blocked"):
        load_tricks(cfg.tricks, block=cfg.plugins.block)


class NotATrick:
    name = "plain"


class BadName(Trick):
    name = "has space"


class BadParams(Trick):
    name = "badparams"
    params = ("alpha",)  # type: ignore[assignment]


class Unmarked(Trick):
    name = "unmarked"

    def trickbox_transform_batch(self, batch, ctx):  # type: ignore[no-untyped-def]
        return None


class WrongHook(Trick):
    name = "wronghook"

    @hookimpl
    def trickbox_on_step(self, ctx):  # type: ignore[no-untyped-def]
        return None


class WrongArg(Trick):
    name = "wrongarg"

    @hookimpl
    def trickbox_after_step(self, batch, parts, ctx, model):  # type: ignore[no-untyped-def]
        return None


class Fine(Trick):
    name = "fine"

    @hookimpl
    def trickbox_after_step(self, ctx):  # type: ignore[no-untyped-def]
        return None


@pytest.mark.parametrize(
    "cls, reason",
    [
        (NotATrick, "is not a subclass of trickbox.Trick"),
        (BadName, "name 'has space' is not a valid identifier"),
        (BadParams, "params holds 'alpha', which is not a trickbox.Param"),
        (Unmarked, "method trickbox_transform_batch looks like a hook but lacks @trickbox.hookimpl"),
        (WrongHook, "hook trickbox_on_step does not exist"),
        (WrongArg, "hook trickbox_after_step takes model, which the hook does not provide"),
    ],
    ids=["not-a-trick", "bad-name", "bad-params", "unmarked-hook", "unknown-hook", "extra-argument"],
)
def test_hook_problems_name_the_reason(cls, reason):
    assert any(reason in p for p in hook_problems(cls)), hook_problems(cls)
    cat = Catalog()
    cat.add(cls, package="pkg-x")
    cat.add(Fine, package="pkg-y")
    assert [(b.package, reason in b.reason) for b in cat.broken] == [("pkg-x", True)]
    assert list(cat.tricks) == ["fine"] and hook_problems(Fine) == []
