import subprocess
import sys

import pytest

from logitkit import __version__
from logitkit.cli import main


def test_help_lists_every_verb(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for verb in ("audit", "thresholds", "reproduce", "bench"):
        assert verb in text


def test_version_matches_package_metadata(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"logitkit {__version__}"
    assert __version__ != "0.0.0+unknown"


def test_console_script_runs_as_a_module():
    done = subprocess.run([sys.executable, "-m", "logitkit.cli", "--version"],
                          capture_output=True, text=True)
    assert done.returncode == 0
    assert done.stdout.startswith("logitkit ")


def test_unknown_verb_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["frobnicate"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_bench_rejects_unknown_names(capsys, tmp_path):
    assert main(["bench", "no_such_benchmark", "--out", str(tmp_path)]) == 2
    assert "unknown benchmark" in capsys.readouterr().err
