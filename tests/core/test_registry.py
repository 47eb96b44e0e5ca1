"""The registry: what plugin authors trip on is said when the plugin loads, in one line."""
from __future__ import annotations

import pytest

from trickbox import Param, Search, Trick, hookimpl
from trickbox.registry import Catalog, discover
from trickbox.trick import ConfigError


class WrappedChain(Trick):
    name = "wrapped_chain"

    @hookimpl(wrapper=True)
    def trickbox_transform_batch(self, batch, ctx):  # a wrapper would hand the chain a generator
        return (yield)


class SearchOutsideRange(Trick):
    name = "search_outside"
    params = (Param("p", float, 0.5, "a probability", low=0, high=1, search=Search(0.1, 2.0)),)


def test_a_wrapper_on_a_chain_hook_is_rejected_at_registration():
    cat = Catalog()
    cat.add(WrappedChain)
    assert "wrapped_chain" not in cat.tricks
    (broken,) = cat.broken
    assert broken.name == "wrapped_chain" and "trickbox_transform_batch is a chain" in broken.reason


def test_a_search_range_outside_the_valid_range_is_reported_when_the_plugin_loads():
    cat = Catalog()
    cat.add(SearchOutsideRange)
    (broken,) = cat.broken
    assert broken.name == "search_outside" and "parameter p" in broken.reason and "2.0" in broken.reason
    with pytest.raises(ConfigError, match="could not be loaded"):
        cat.get("search_outside")


def test_blocking_a_name_that_is_neither_a_trick_nor_a_distribution_warns(capsys, monkeypatch):
    monkeypatch.setenv("TRICKBOX_BLOCK", "mixpu_never_seen")
    discover()
    err = capsys.readouterr().err
    assert "'mixpu_never_seen'" in err and "neither an installed trick nor a plugin distribution" in err
    assert "valid:" in err and "mixup" in err


def test_blocking_a_distribution_blocks_all_its_tricks():
    cat = discover(block=["trickbox-cutmix"])
    assert "cutmix" not in cat.tricks and "cutmix" in cat.blocked
    with pytest.raises(ConfigError, match="is blocked"):
        cat.get("cutmix")


def test_with_autoload_off_an_unknown_trick_says_plugins_were_not_loaded(monkeypatch):
    monkeypatch.setenv("TRICKBOX_DISABLE_PLUGIN_AUTOLOAD", "1")
    cat = discover()
    assert "cutmix" in cat.skipped
    with pytest.raises(ConfigError) as err:
        cat.get("cutmix")
    assert "installed plugins were not loaded" in str(err.value) and "unset it" in str(err.value)


def test_tricks_from_a_module_named_in_trickbox_plugins(monkeypatch, tmp_path):
    (tmp_path / "my_local_trick.py").write_text(
        "from trickbox import Trick, hookimpl\n"
        "class Local(Trick):\n    name = 'local_one'\n    @hookimpl\n"
        "    def trickbox_setup(self, ctx):\n        pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("TRICKBOX_PLUGINS", "my_local_trick")
    cat = discover()
    assert cat.tricks["local_one"].package == "TRICKBOX_PLUGINS=my_local_trick"
