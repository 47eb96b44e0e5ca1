"""``trickbox eval``: clean and FGSM / I-FGSM error of a run trained by the CLI; bad input exits 2 in one line."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trickbox.cli import main
from trickbox.cli.eval import parse_eps
from trickbox.trick import ConfigError

from ..conftest import subprocess_env


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-epoch digits model trained through the CLI."""
    out = tmp_path_factory.mktemp("eval_runs")
    cmd = [sys.executable, "-m", "trickbox", "train", "train.epochs=2", f"train.out_dir={out}", "train.run_name=digits",
           "train.tracker=none", "train.progress=false"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), timeout=300, cwd=out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = out / "digits"
    assert (run / "model.json").is_file() and (run / "config.yaml").is_file()
    return run


@pytest.mark.slow
@pytest.mark.parametrize("attack, extra", [("fgsm", []), ("ifgsm", ["--iterations", "3"])])
def test_attack_error_at_least_clean(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], attack: str,
                                     extra: list[str]) -> None:
    out = tmp_path / f"{attack}.json"
    rc = main(["eval", str(run_dir), "--attack", attack, "--eps", "2,8", "--no-progress", "--out", str(out), *extra])
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["attack"] == attack and result["split"] == "test" and result["n"] > 0
    clean = result["clean"]
    assert 0.0 <= clean["top1_error"] < 0.5  # two epochs learn the digits well enough
    assert [r["eps"] for r in result["attacked"]] == [2.0, 8.0]
    for r in result["attacked"]:
        assert r["top1_error"] >= clean["top1_error"]
        assert r["top5_error"] >= clean["top5_error"]
    assert result["attacked"][1]["top1_error"] >= result["attacked"][0]["top1_error"]  # larger eps, no weaker attack
    table = capsys.readouterr().out
    assert "clean" in table and attack in table and "top-1 err" in table


@pytest.mark.slow
def test_clean_only_default_out(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(run_dir), "--no-progress"]) == 0
    result = json.loads((run_dir / "eval-test-none.json").read_text())
    assert result["attacked"] == [] and result["clean"]["top1_error"] <= 1.0


@pytest.mark.parametrize(
    "args, words",
    [
        (["--attack", "fgsm", "--eps", "0"], "--eps"),
        (["--attack", "fgsm", "--eps", "-4"], "--eps"),
        (["--attack", "ifgsm", "--eps", "300"], "--eps"),
        (["--attack", "fgsm", "--eps", "abc"], "--eps"),
        (["--attack", "fgsm", "--eps", "1,,2"], "--eps"),
        (["--attack", "fgsm", "--eps", "nan"], "--eps"),
        (["--attack", "ifgsm", "--iterations", "0"], "--iterations"),
        (["--attack", "ifgsm", "--iterations", "x"], "--iterations"),
        (["--attack", "ifgsm", "--step-size", "0"], "--step-size"),
        (["--attack", "pgd"], "invalid choice"),
    ],
)
def test_bad_input_exits_2_before_loading(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                                          words: str) -> None:
    # the run directory does not exist: a bad number must be reported before anything is looked up
    assert _exit_code(["eval", str(tmp_path / "missing"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err and "Traceback" not in err


def test_not_a_run_dir_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "config.yaml").write_text("train:\n  epochs: 1\n")
    assert main(["eval", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model.json" in err


def test_bad_eps_subprocess_one_line(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "trickbox", "eval", str(tmp_path), "--attack", "fgsm", "--eps", "1,x"],
                          capture_output=True, text=True, env=subprocess_env(), timeout=120)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_parse_eps() -> None:
    assert parse_eps("1, 2,4.5") == [1.0, 2.0, 4.5]
    assert parse_eps("255") == [255.0]
    with pytest.raises(ConfigError, match="255"):
        parse_eps("256")


def _exit_code(argv: list[str]) -> int:
    """``trickbox.cli.main``'s return code, or the code of the SystemExit argparse raises."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


@pytest.mark.slow
def test_epoch_checkpoints_and_unfinished_runs_evaluate_too(run_dir: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    steps = sorted((run_dir / "checkpoints").iterdir())
    assert len(steps) == 2
    final, last, first = tmp_path / "final.json", tmp_path / "last.json", tmp_path / "first.json"
    assert main(["eval", str(run_dir), "--no-progress", "--out", str(final)]) == 0
    assert main(["eval", str(steps[-1]), "--no-progress", "--out", str(last)]) == 0
    assert main(["eval", str(steps[0]), "--attack", "fgsm", "--eps", "4", "--no-progress", "--out", str(first)]) == 0
    # the last epoch's checkpoint holds the final weights; the first epoch's is another model
    assert json.loads(last.read_text())["clean"] == json.loads(final.read_text())["clean"]
    assert json.loads(first.read_text())["clean"] != json.loads(final.read_text())["clean"]
    # a run without a final model (preempted, stopped) falls back to its latest complete checkpoint
    unfinished = tmp_path / "unfinished"
    shutil.copytree(run_dir, unfinished)
    (unfinished / "model.safetensors").unlink()
    capsys.readouterr()
    assert main(["eval", str(unfinished), "--no-progress", "--out", str(tmp_path / "u.json")]) == 0
    assert "epoch checkpoint" in capsys.readouterr().err
    assert json.loads((tmp_path / "u.json").read_text())["clean"] == json.loads(final.read_text())["clean"]
    # a damaged checkpoint is refused in one line
    damaged = unfinished / "checkpoints" / steps[0].name / "model.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:-10])
    assert main(["eval", str(damaged.parent)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "corrupt" in err


def test_eval_on_other_data_from_another_directory(imagenet_like: Path, tmp_path: Path, monkeypatch, cli) -> None:
    """A run trained with a relative data.root stores it absolute, so eval works from anywhere; eval with
    data.root=OTHER (the same images as shards) gives the same numbers, into its own file."""
    import shutil

    from trickbox.config import load_config
    from trickbox.loop import train

    work = tmp_path / "work"
    shutil.copytree(imagenet_like / "folder", work / "images")
    monkeypatch.chdir(work)
    cfg = load_config([], ["data.name=imagefolder", "data.root=images", "data.image_size=32", "train.epochs=1",
                           "train.batch_size=16", "train.tracker=none", "train.progress=false",
                           f"train.out_dir={tmp_path / 'runs'}", "train.run_name=r"])
    run = train(cfg).run_dir
    assert load_config([run / "config.yaml"]).data.root == str((work / "images").resolve())

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    own = cli("eval", str(run), "--no-progress", cwd=elsewhere)
    assert own.returncode == 0, own.stderr
    shutil.move(str(work / "images"), str(tmp_path / "moved"))  # the run's data is gone: eval says how to point at it
    gone = cli("eval", str(run), "--no-progress")
    assert gone.returncode == 2 and "data.root=PATH" in gone.stderr and len(gone.stderr.strip().splitlines()) == 1
    other = cli("eval", str(run), "--no-progress", f"data.root={tmp_path / 'moved'}")
    assert other.returncode == 0, other.stderr
    first = json.loads((run / "eval-test-none.json").read_text())
    files = sorted(run.glob("eval-test-none-*.json"))
    assert len(files) == 1, files
    second = json.loads(files[0].read_text())
    assert second["data_root"] == str(tmp_path / "moved") and second["clean"] == first["clean"]
    assert second["n"] == first["n"] > 0
    bad = cli("eval", str(run), "model.name=resnet18")
    assert bad.returncode == 2 and "takes data.KEY=VALUE overrides" in bad.stderr
