"""Shared helpers: progress heartbeat, optional extras, safe output files, figures."""

import subprocess
import sys

import pytest

from logitkit import _utils


def test_require_names_the_extra_to_install():
    assert _utils.require("json", extra="x", purpose="p").__name__ == "json"
    with pytest.raises(_utils.MissingExtra) as error:
        _utils.require("no_such_module_for_logitkit.sub", extra="plots", purpose="drawing plots")
    message = str(error.value)
    assert message.startswith("drawing plots needs the Python package 'no_such_module_for_")
    assert 'pip install "logitkit[plots]"' in message
    assert isinstance(error.value, ImportError)


def test_progress_prints_heartbeat_lines_when_not_on_a_terminal(monkeypatch, capsys):
    monkeypatch.delenv("LOGITKIT_PROGRESS", raising=False)
    monkeypatch.setenv("LOGITKIT_HEARTBEAT_S", "0")
    assert list(_utils.progress(range(3), desc="work")) == [0, 1, 2]
    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    assert lines and all(line.startswith("work:") for line in lines)
    assert "\r" not in "".join(lines)
    assert "3/3" in lines[-1]


def test_progress_is_silent_when_switched_off(monkeypatch, capsys):
    monkeypatch.setenv("LOGITKIT_PROGRESS", "0")
    monkeypatch.setenv("LOGITKIT_HEARTBEAT_S", "0")
    assert sum(_utils.progress(range(4))) == 6
    with _utils.progress(total=3, disable=False) as bar:  # callers may pass disable themselves
        bar.update(3)
    assert capsys.readouterr().err == ""


def test_progress_heartbeat_waits_for_its_interval(monkeypatch, capsys):
    monkeypatch.delenv("LOGITKIT_PROGRESS", raising=False)
    monkeypatch.setenv("LOGITKIT_HEARTBEAT_S", "3600")
    assert list(_utils.progress(range(50), desc="work")) == list(range(50))
    assert capsys.readouterr().err.count("work:") <= 1


def test_atomic_output_replaces_in_one_step_and_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "out.json"
    _utils.atomic_write_text(target, "first")
    with pytest.raises(RuntimeError), _utils.atomic_output(target) as tmp:
        tmp.write_text("half-writ")
        assert tmp.suffix == ".json" and tmp.parent == tmp_path
        raise RuntimeError("stop")
    assert target.read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_check_writable_fails_early_with_a_clear_message(tmp_path):
    assert _utils.check_writable(tmp_path / "new" / "deeper" / "x.png").parent.is_dir()
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError, match=r"^cannot write .*file/x\.png: "):
        _utils.check_writable(blocker / "x.png")
    with pytest.raises(IsADirectoryError, match="is a folder"):
        _utils.check_writable(tmp_path)


def test_figures_do_not_touch_the_global_matplotlib_backend(tmp_path):
    pytest.importorskip("matplotlib")
    code = (
        "import matplotlib; matplotlib.use('svg'); from logitkit._utils import new_figure, "
        "save_figure; fig, ax = new_figure(1, 2, figsize=(4, 2)); ax[0].plot([0, 1]); "
        f"save_figure(fig, {str(tmp_path / 'f.png')!r}); import sys; "
        "print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["svg", "False"]
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
