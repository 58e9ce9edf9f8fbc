"""Path arguments of every verb: a file where a folder belongs (or the reverse) is named as such in
one line, ``logitkit VERB: error: ...``, exit status 2, before any work; ``--help`` is light."""

import subprocess
import sys

import numpy as np
import pytest

from logitkit import _utils
from logitkit.cli import main


def _one_error_line(capsys, verb: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith(f"logitkit {verb}: error: ") and err.count("\n") == 1, err
    return err


def test_reproduce_help_imports_neither_torch_nor_numpy():
    code = ("import sys; from logitkit.cli import main\ntry:\n    main(['reproduce', '--help'])\n"
            "except SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "--seed SEED" in done.stdout
    assert done.stderr.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize(("argv", "flag_help"), [
    (["reproduce", "--help"], "random seed, an integer from 0"),
    (["audit", "--help"], "exact (default): cheap witnesses"),
])
def test_seed_and_method_have_help(capsys, argv, flag_help):
    with pytest.raises(SystemExit):
        main(argv)
    assert flag_help in " ".join(capsys.readouterr().out.split())


@pytest.fixture
def files(tmp_path, monkeypatch):
    """A folder with a file ``afile``, a folder ``adir`` and small valid inputs; cwd there."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    np.save(tmp_path / "w.npy", np.eye(3))
    np.save(tmp_path / "p.npy", np.full((4, 3), 1 / 3))
    np.save(tmp_path / "l.npy", np.array([0, 1, 2, 0]))
    (tmp_path / "pairs.csv").write_text("sentence1,sentence2,label\na,b,1\nc,d,0\n")
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "tiny.py").write_text("raise SystemExit('must not run')\n")
    return tmp_path


@pytest.mark.parametrize("argv", [
    ["audit", "w.npy", "--plot", "afile/x.png"],
    ["audit", "w.npy", "--json", "afile/x.json"],
    ["thresholds", "fit", "--probs", "p.npy", "--labels", "l.npy", "--out", "afile/o.npy"],
    ["thresholds", "fit", "--probs", "p.npy", "--labels", "l.npy", "--out", "o.npy",
     "--report", "afile/r.json"],
    ["thresholds", "apply", "--probs", "p.npy", "--weights", "w.npy", "--out", "afile/o.csv"],
    ["pairs", "pairs.csv", "--out", "afile/x.csv"],
    ["reproduce", "thresholds", "--smoke", "--out", "afile/deeper"],
    ["bench", "tiny", "--dir", "scripts", "--out", "afile/deeper"],
])
def test_an_output_under_a_file_says_that_file_is_not_a_folder(files, capsys, argv):
    assert main(argv) == 2
    err = _one_error_line(capsys, argv[0])
    assert "afile is a file, not a folder" in err and "File exists" not in err


@pytest.mark.parametrize(("argv", "expected"), [
    (["thresholds", "fit", "--probs", "adir", "--labels", "l.npy", "--out", "o.npy"],
     "--probs adir is a folder; expected a file"),
    (["thresholds", "fit", "--probs", "p.npy", "--labels", "adir", "--out", "o.npy"],
     "--labels adir is a folder; expected a file"),
    (["thresholds", "fit", "--probs", "p.npy", "--labels", "l.npy", "--train-prior", "adir",
      "--out", "o.npy"], "--train-prior adir is a folder; expected a file"),
    (["thresholds", "apply", "--probs", "adir", "--weights", "w.npy"],
     "--probs adir is a folder; expected a file"),
    (["thresholds", "apply", "--probs", "p.npy", "--weights", "adir"],
     "--weights adir is a folder; expected a file"),
    (["thresholds", "apply", "--probs", "p.npy", "--weights", "absent.npy"],
     "--weights absent.npy: no such file"),
    (["reproduce", "thresholds", "--smoke", "--data", "afile"],
     "--data afile is a file; expected a folder"),
    (["reproduce", "thresholds", "--smoke", "--data", "absent"], "--data absent: no such folder"),
    (["reproduce", "thresholds", "--smoke", "--out", "afile"],
     "--out afile is a file; expected a folder"),
    (["bench", "tiny", "--dir", "afile"], "--dir afile is a file; expected a folder"),
    (["bench", "tiny", "--dir", "absent"], "--dir absent: no such folder"),
    (["bench", "tiny", "--dir", "scripts", "--out", "afile"],
     "--out afile is a file; expected a folder"),
])
def test_a_file_and_a_folder_are_told_apart(files, capsys, argv, expected):
    assert main(argv) == 2
    assert expected in _one_error_line(capsys, argv[0])


def test_bench_out_is_a_folder_and_a_json_file_name_is_refused(files, capsys):
    assert main(["bench", "tiny", "--dir", "scripts", "--out", "x.json"]) == 2
    err = _one_error_line(capsys, "bench")
    assert "--out x.json looks like a file name, but --out is a folder" in err
    assert not (files / "x.json").exists()  # nothing created, nothing ran


@pytest.mark.parametrize("seed", ["-5", str(2**31), str(2**32)])
def test_reproduce_refuses_a_bad_seed_before_any_work(files, capsys, monkeypatch, seed):
    from logitkit.experiments import _framework

    def never(*args, **kwargs):
        raise AssertionError("an experiment started before --seed was checked")

    monkeypatch.setattr(_framework, "run_experiments", never)
    monkeypatch.setattr("logitkit.experiments.cli.run_experiments", never, raising=False)
    assert main(["reproduce", "thresholds", "--smoke", "--seed", seed, "--out", "out"]) == 2
    err = _one_error_line(capsys, "reproduce")
    assert f"--seed must be an integer from 0 to {2**31 - 1}" in err and seed in err
    assert not (files / "out").exists()


def test_describe_names_gives_the_closest_the_count_and_a_few():
    names = [f"model.layers.{i}.mlp.weight" for i in range(100)] + ["lm_head.weight"]
    text = _utils.describe_names(names, "lm_haed.weight", what="tensors")
    assert text.startswith("closest: 'lm_head.weight'; 101 tensors, e.g. ")
    assert text.count("'") == 2 * 6 and text.endswith(", ...")
    assert _utils.describe_names(["a", "b"], "zzz") == "2 names: 'a', 'b'"
    assert "closest: 'model.embed_tokens.weight'" in _utils.describe_names(
        ["model.embed_tokens.weight", "lm_head.weight"], "embed_tokens")


def test_path_checks(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(NotADirectoryError, match="afile is a file, not a folder"):
        _utils.check_writable(blocker / "deeper" / "x.png")
    with pytest.raises(NotADirectoryError, match="is a file; expected a folder"):
        _utils.check_output_folder(blocker, flag="--out")
    assert _utils.check_output_folder(tmp_path / "new" / "out", flag="--out").is_dir()
    with pytest.raises(IsADirectoryError, match="--probs .* is a folder; expected a file"):
        _utils.check_input_file(tmp_path, flag="--probs")
    with pytest.raises(FileNotFoundError, match="no such file"):
        _utils.check_input_file(tmp_path / "absent", flag="--probs")
    with pytest.raises(NotADirectoryError, match="is a file; expected a folder"):
        _utils.check_input_folder(blocker, flag="--data")
