"""The plugin core and the config: discovery, validation, ordering, one-line errors."""
from __future__ import annotations

import pytest

import trickbox
from trickbox.config import load_config, parse_override
from trickbox.registry import discover, hook_problems
from trickbox.trick import ConfigError, Param, Trick, hookimpl


def test_builtins_come_from_entry_points():
    cat = discover()
    for name in ("sgdr", "label_smoothing", "distillation", "mixup", "noise"):
        info = cat.tricks[name]
        assert info.package == "trickbox" and info.version == trickbox.__version__
        assert info.target.startswith("trickbox.tricks.")


class BadHookName(Trick):
    name = "bad_hook_name"

    @hookimpl
    def trickbox_transfrom_batch(self, batch, ctx):  # typo on purpose
        return None


class BadHookArg(Trick):
    name = "bad_hook_arg"

    @hookimpl
    def trickbox_loss(self, logits, batch, ctx, teacher):
        return None


class Good(Trick):
    name = "good"
    params = (Param("scale", float, 1.0, low=0, low_open=True),)

    @hookimpl
    def trickbox_transform_batch(self, batch, ctx):
        return batch.replace(x=batch.x * self.scale)


def test_bad_plugins_are_reported_and_others_keep_working():
    cat = discover()
    for cls in (BadHookName, BadHookArg, Good):
        cat.add(cls, package="test-pkg")
    reasons = {b.name: b.reason for b in cat.broken}
    assert "does not exist" in reasons["bad_hook_name"] and "trickbox_transform_batch" in reasons["bad_hook_name"]
    assert "teacher" in reasons["bad_hook_arg"]
    assert "good" in cat.tricks and "mixup" in cat.tricks
    with pytest.raises(ConfigError, match="could not be loaded"):
        cat.get("bad_hook_arg")
    assert hook_problems(Good) == []


def test_unknown_trick_and_param_say_did_you_mean():
    cat = discover()
    with pytest.raises(ConfigError, match=r"unknown trick 'mixpu'; did you mean 'mixup'\?"):
        cat.build({"mixpu": {}})
    with pytest.raises(ConfigError, match=r"tricks.mixup.alfa; did you mean 'alpha'\?"):
        cat.build({"mixup": {"alfa": 0.2}})


@pytest.mark.parametrize(
    "trick, values, fragment",
    [
        ("mixup", {"alpha": 0}, "tricks.mixup.alpha must be > 0"),
        ("mixup", {"alpha": -1}, "tricks.mixup.alpha must be > 0"),
        ("label_smoothing", {"eps": 1.0}, "tricks.label_smoothing.eps must be in [0, 1)"),
        ("label_smoothing", {"eps": "big"}, "must be a number"),
        ("sgdr", {"t0": 0.5}, "tricks.sgdr.t0 must be >= 1"),
        ("sgdr", {"t_mult": 0.9}, "tricks.sgdr.t_mult must be >= 1"),
        ("distillation", {"teacher": "nowhere/run", "temperature": 2}, "not a trickbox run directory"),
        ("distillation", {"teacher": "cifar_resnet8", "checkpoint": "missing.safetensors"}, "missing or unreadable"),
        ("mixup", {"pairing": "nearest"}, "one of 'random', 'knn'"),
        ("mixup", {"ways": 3, "layer": 1}, "ways > 2"),
    ],
)
def test_bad_parameters_are_rejected(trick, values, fragment):
    with pytest.raises(ConfigError) as err:
        discover().build({trick: values})
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_distillation_temperature_must_be_positive(tmp_path):
    from trickbox.build import create_model
    from trickbox.checkpoint import save_model

    save_model(create_model("cifar_resnet8", num_classes=10, in_chans=1), tmp_path, {"name": "cifar_resnet8",
                                                                                     "num_classes": 10, "in_chans": 1})
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        discover().build({"distillation": {"teacher": str(tmp_path), "temperature": 0}})


def test_blocking_and_autoload(monkeypatch):
    monkeypatch.setenv("TRICKBOX_BLOCK", "noise")
    cat = discover()
    assert "noise" not in cat.tricks
    with pytest.raises(ConfigError, match="blocked"):
        cat.get("noise")
    assert "mixup" not in discover(block=["mixup"]).tricks
    monkeypatch.delenv("TRICKBOX_BLOCK")
    monkeypatch.setenv("TRICKBOX_DISABLE_PLUGIN_AUTOLOAD", "1")
    cat = discover()
    assert {i.package for i in cat.tricks.values()} == {"trickbox"}


def test_config_layers_and_errors(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train: {epochs: 3}\ntricks: {mixup: {alpha: 0.4}, sgdr: {}}\n")
    cfg = load_config([f], ["tricks.mixup.alpha=1.0", "tricks.sgdr=null", "tricks.label_smoothing.eps=0.2",
                            "optim.lr=0.01"])
    assert cfg.train.epochs == 3 and cfg.optim.lr == 0.01
    assert cfg.tricks == {"mixup": {"alpha": 1.0}, "label_smoothing": {"eps": 0.2}}
    with pytest.raises(ConfigError, match=r"unknown config key 'train.epohcs'; did you mean 'epochs'\?"):
        load_config([], ["train.epohcs=3"])
    with pytest.raises(ConfigError, match="train.epochs must be an integer"):
        load_config([], ["train.epochs=three"])
    with pytest.raises(ConfigError, match="train.mixed_precision must be one of"):
        load_config([], ["train.mixed_precision=fp8"])
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("train.epochs")
    evil = tmp_path / "evil.yaml"
    evil.write_text("train: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="not safe YAML"):
        load_config([evil])


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["tricks.mixpu.alpha=0.2"], "did you mean 'mixup'"),
        (["train.epohcs=2"], "unknown config key 'train.epohcs'"),
        (["tricks.mixup.alpha=-1"], "tricks.mixup.alpha must be > 0"),
        (["train.batch_size=0"], "train.batch_size must be an integer in [1, 1048576]"),
        (["data.name=cifar11"], "data.name"),
        (["--config", "missing.yaml"], "does not exist"),
    ],
)
def test_cli_bad_config_exits_2_with_one_line(tmp_path, args, fragment, cli):
    res = cli("train", *args, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    lines = [line for line in res.stderr.strip().splitlines() if line]
    assert len(lines) == 1 and fragment in lines[0], res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "wandb").exists()


def test_cli_list_shows_tricks_and_params(tmp_path, cli):
    res = cli("list", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "mixup  (trickbox" in res.stdout and "alpha: float = 0.2" in res.stdout
    assert "search [0.05, 4] log" in res.stdout
