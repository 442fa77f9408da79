"""bench/results.py: what a bench prints goes to the results page, a section per command, with the commit
and machine, and no absolute path of the machine."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def results():
    spec = importlib.util.spec_from_file_location("bench_results", ROOT / "bench" / "results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_bench(results, page, argv, body, monkeypatch):
    monkeypatch.setattr(sys, "argv", argv)
    with results.recorded(page):
        body()


def test_a_run_writes_its_section_and_a_rerun_replaces_it(results, tmp_path, monkeypatch, capsys):
    page = tmp_path / "results.md"
    script = str(ROOT / "bench" / "selection.py")
    run_bench(results, page, [script, "--width", "16"], lambda: print(f"ratio 2.5x in {ROOT}/runs/x"), monkeypatch)
    run_bench(results, page, [script, "--width", "64"], lambda: print("ratio 3.0x"), monkeypatch)
    assert "ratio 2.5x" in capsys.readouterr().out  # still printed
    run_bench(results, page, [script, "--width", "16"], lambda: print("ratio 2.7x"), monkeypatch)
    text = page.read_text()
    assert text.count("## `python bench/selection.py --width 16`") == 1
    assert "ratio 2.7x" in text and "ratio 2.5x" not in text and "ratio 3.0x" in text
    assert text.index("--width 16`") < text.index("--width 64`")  # replaced in place
    assert str(ROOT) not in text and results.commit().split()[0] in text
    assert results.machine().split(",")[0] in text


def test_failures_and_no_record_write_nothing(results, tmp_path, monkeypatch):
    page = tmp_path / "results.md"
    script = str(ROOT / "bench" / "methods.py")

    def fails():
        print("half a table")
        raise RuntimeError("bench died")

    with pytest.raises(RuntimeError):
        run_bench(results, page, [script], fails, monkeypatch)
    with pytest.raises(SystemExit):
        run_bench(results, page, [script], lambda: sys.exit(3), monkeypatch)
    run_bench(results, page, [script, "--no-record"], lambda: print("not kept"), monkeypatch)
    assert not page.exists()
    with pytest.raises(SystemExit):
        run_bench(results, page, [script], lambda: (print("kept"), sys.exit(0)), monkeypatch)
    assert "kept" in page.read_text()


def test_help_writes_nothing(results, tmp_path, monkeypatch):
    page = tmp_path / "results.md"
    for flag in ("--help", "-h"):  # argparse prints the usage and exits 0
        with pytest.raises(SystemExit):
            run_bench(results, page, [str(ROOT / "bench" / "peers.py"), flag],
                      lambda: (print("usage: peers.py"), sys.exit(0)), monkeypatch)
    assert not page.exists()


def test_paths_of_the_machine_become_relative(results):
    home = str(Path.home())
    text = results.relative(f"{ROOT}/runs/a and {home}/.cache/ets/w.gguf and {ROOT}x")
    assert text == f"./runs/a and ~/.cache/ets/w.gguf and {ROOT}x"  # a longer name is another folder
