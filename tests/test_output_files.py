"""Output files get the mode a plain ``open(path, "w")`` gives, and an output file's folder must
exist: a missing one is refused, by name, before any work (and is not created)."""

import contextlib
import json
import os
import stat

import numpy as np
import pytest

from logitkit import _utils
from logitkit.cli import main

HEAD = np.array([[1, 2], [2, 1], [1, 0], [0, 1], [1, 1]], dtype=float)  # class 4 unargmaxable


@contextlib.contextmanager
def umask(mask):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def inputs(tmp_path, monkeypatch):
    """A tiny head, a tiny 3-class problem as CSV and a pair file, in the working folder."""
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "head.npy", HEAD)
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=30)
    np.savetxt(tmp_path / "probs.csv", probs, delimiter=",")
    labels = np.concatenate([np.arange(3), rng.integers(0, 3, size=27)])
    np.savetxt(tmp_path / "labels.csv", labels, fmt="%d")
    (tmp_path / "pairs.csv").write_text("sentence1,sentence2,label\na,b,1\nc,d,0\n")
    return tmp_path


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_the_atomic_writer_respects_the_umask(tmp_path, mask, expected):
    with umask(mask):
        _utils.atomic_write_text(tmp_path / "a.txt", "x")
        with _utils.atomic_output(tmp_path / "b.npy") as tmp:
            np.save(tmp, np.zeros(2))
        assert mode(tmp_path / "a.txt") == expected
        assert mode(tmp_path / "b.npy") == expected
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        assert mode(plain) == expected  # the same as open(path, "w")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.npy", "plain.txt"]


@pytest.mark.parametrize("existing", [0o640, 0o600, 0o444])
def test_a_replaced_file_keeps_its_mode_like_open_does(tmp_path, existing):
    target = tmp_path / "r.json"
    target.write_text("old")
    target.chmod(existing)
    with umask(0o022):
        _utils.atomic_write_text(target, "new")
    assert target.read_text() == "new" and mode(target) == existing


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o077, 0o600)])
def test_audit_outputs_respect_the_umask(inputs, capsys, mask, expected):
    pytest.importorskip("matplotlib")
    with umask(mask):
        assert main(["audit", "head.npy", "--json", "a.json", "--plot", "a.png"]) == 0
    assert json.loads((inputs / "a.json").read_text())["counts"]["unargmaxable"] == 1
    assert mode(inputs / "a.json") == expected and mode(inputs / "a.png") == expected


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o077, 0o600)])
def test_thresholds_outputs_respect_the_umask(inputs, capsys, mask, expected):
    with umask(mask):
        assert main(["thresholds", "fit", "--probs", "probs.csv", "--labels", "labels.csv",
                     "--out", "w.csv", "--report", "fit.json"]) == 0
        assert main(["thresholds", "apply", "--probs", "probs.csv", "--weights", "w.csv",
                     "--out", "preds.npy"]) == 0
    for name in ("w.csv", "fit.json", "preds.npy"):
        assert mode(inputs / name) == expected, name


def _never(*args, **kwargs):
    raise AssertionError("work started before the output paths were checked")


@pytest.mark.parametrize(("argv", "flag", "path"), [
    (["audit", "head.npy", "--json", "missing/deeper/a.json"], "--json", "missing/deeper/a.json"),
    (["audit", "head.npy", "--plot", "missing/a.png"], "--plot", "missing/a.png"),
    (["thresholds", "fit", "--probs", "probs.csv", "--labels", "labels.csv", "--out",
      "missing/w.npy"], "--out", "missing/w.npy"),
    (["thresholds", "fit", "--probs", "probs.csv", "--labels", "labels.csv", "--out", "w.npy",
      "--report", "missing/fit.json"], "--report", "missing/fit.json"),
    (["thresholds", "apply", "--probs", "probs.csv", "--weights", "labels.csv", "--out",
      "missing/p.csv"], "--out", "missing/p.csv"),
    (["pairs", "pairs.csv", "--out", "missing/s.csv"], "--out", "missing/s.csv"),
    (["pairs", "pairs.csv", "--metrics", "missing/m.json"], "--metrics", "missing/m.json"),
])
def test_an_output_file_in_a_missing_folder_is_refused_before_any_work(inputs, capsys,
                                                                        monkeypatch, argv, flag,
                                                                        path):
    monkeypatch.setattr("logitkit.audit.checkpoint.read_head", _never)
    monkeypatch.setattr("logitkit.audit.argmaxable.check_argmaxable", _never)
    monkeypatch.setattr("logitkit.thresholds.cli.read_table", _never)
    monkeypatch.setattr("logitkit.matching.cli._encoder", _never)
    before = sorted(p.name for p in inputs.iterdir())
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"logitkit {argv[0]}: error: ")
    folder = os.path.dirname(path)
    assert (f"cannot write {flag} {path}: the folder {folder} does not exist; create it first "
            f"(mkdir -p {folder})") in err
    assert sorted(p.name for p in inputs.iterdir()) == before  # no folder, no file created


def test_check_output_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    assert _utils.check_output_file(tmp_path / "ok.json", flag="--json") == tmp_path / "ok.json"
    with pytest.raises(FileNotFoundError, match="--json .*absent does not exist; create it"):
        _utils.check_output_file(tmp_path / "absent" / "x.json", flag="--json")
    with pytest.raises(NotADirectoryError, match="afile is a file, not a folder"):
        _utils.check_output_file(tmp_path / "afile" / "x.json", flag="--json")
    with pytest.raises(IsADirectoryError, match="--json .* is a folder; expected a file name"):
        _utils.check_output_file(tmp_path, flag="--json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # nothing created


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a non-root POSIX user")
def test_an_unwritable_folder_is_refused(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir(mode=0o500)
    try:
        with pytest.raises(OSError, match="cannot write --report .*locked/r.json: Permission"):
            _utils.check_output_file(folder / "r.json", flag="--report")
    finally:
        folder.chmod(0o700)
