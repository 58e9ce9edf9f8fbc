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


def test_bench_runs_scripts_and_saves_their_json(tmp_path, capsys):
    import json

    scripts = tmp_path / "benchmarks"
    scripts.mkdir()
    (scripts / "harness.py").write_text("raise SystemExit('the harness is not a benchmark')\n")
    (scripts / "tiny.py").write_text(
        "import json, sys\nprint('noise')\n"
        "print(json.dumps({'benchmark': 'tiny', 'quick': '--quick' in sys.argv}))\n"
    )
    (scripts / "broken.py").write_text("raise SystemExit(3)\n")
    out = tmp_path / "out"
    assert main(["bench", "tiny", "--quick", "--dir", str(scripts), "--out", str(out)]) == 0
    assert json.loads((out / "tiny.json").read_text()) == {"benchmark": "tiny", "quick": True}
    assert main(["bench", "all", "--dir", str(scripts), "--out", str(out)]) == 1
    assert "failed: ['broken']" in capsys.readouterr().err
