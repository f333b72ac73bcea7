"""The benchmark code cannot rot: `run_all.py --quick` runs every benchmark at toy size (the real-data
ones in test_benchmarks_real_data.py). Those whole runs are marked ``benchmark``: `make bench-quick`
runs them, `make test` leaves them out (they test benchmark scripts, not kerasseg) and runs the cheap
checks of the benchmark machinery here, `run_all.py` end to end on two quick benchmarks included."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from kerasseg_testing import REAL_DATA_BENCHMARKS, REPO_ROOT, run_quick_benchmarks

REQUIRED_KEYS = [
    "train_efficiency",
    "pipeline_vs_memory",
    "pipeline_images_per_s",
    "convert_speedup_2_workers",
    "crf_wrapper_overhead",
    "tf_crf_vs_pydensecrf",
    "serving_latency_ratio",
    "train_peak_rss_mb",
    "idle_peak_rss_mb",
    "infer_peak_rss_mb",
    "train3d_peak_rss_mb",
    "infer3d_peak_rss_mb",
    "train_bf16_vs_fp32_speed",
]
def _benchmark_names() -> list[str]:
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    import run_all

    return run_all.available()


@pytest.mark.benchmark
@pytest.mark.slow
def test_quick_benchmarks_write_every_key(tmp_path):
    names = [name for name in _benchmark_names() if name not in REAL_DATA_BENCHMARKS]
    assert {"convert", "training", "tf_crf", "serving"} <= set(names)  # every other bench_*.py is run too
    figures = run_quick_benchmarks(names, tmp_path)
    missing = [key for key in REQUIRED_KEYS if key not in figures]
    assert missing == []
    assert all(isinstance(figures[key], float) for key in REQUIRED_KEYS)
    # each peak is the measuring child's own: training holds activations and gradients an idle model does not
    assert figures["idle_peak_rss_mb"] < figures["train_peak_rss_mb"]
    table = (tmp_path / "RESULTS.md").read_text()
    assert "quick mode" in table and "| `train_efficiency` |" in table


def test_run_all_runs_quick_benchmarks_and_writes_their_table(tmp_path):
    figures = run_quick_benchmarks(["convert", "crf"], tmp_path)
    assert {"convert_speedup_2_workers", "crf_wrapper_overhead"} <= set(figures)
    assert all(isinstance(value, float) for value in figures.values())
    table = (tmp_path / "RESULTS.md").read_text()
    assert "quick mode" in table and "| `crf_wrapper_overhead` |" in table and "| convert |" in table


def _bench_convert():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_convert", REPO_ROOT / "benchmarks" / "bench_convert.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_labelme2voc_comparison_runs_the_given_script_and_skips_without_one(tmp_path, capsys):
    bench = _bench_convert()
    # a stand-in for labelme's script: the same command line, writes its output folder
    script = tmp_path / "labelme2voc.py"
    script.write_text(
        "import argparse, pathlib\n"
        "p = argparse.ArgumentParser(); p.add_argument('input_dir'); p.add_argument('output_dir')\n"
        "p.add_argument('--labels', required=True)\n"
        "for flag in ('--noviz', '--nonpy', '--noobject'): p.add_argument(flag, action='store_true')\n"
        "a = p.parse_args(); assert a.noviz and a.nonpy and a.noobject\n"
        "out = pathlib.Path(a.output_dir); out.mkdir()\n"
        "(out / 'n.txt').write_text(str(len(list(pathlib.Path(a.input_dir).glob('*.json')))))\n"
    )
    (tmp_path / "work").mkdir()
    figures = bench.compare_with_labelme2voc(tmp_path / "work", script, sys.executable, sizes=(3,), rounds=1)
    assert list(figures) == ["convert_vs_labelme2voc_3"] and figures["convert_vs_labelme2voc_3"] > 0
    assert (tmp_path / "work" / "out_theirs_3" / "n.txt").read_text() == "3"
    assert (tmp_path / "work" / "out_ours_3" / "dataset.json").is_file()

    (tmp_path / "work2").mkdir()
    assert bench.compare_with_labelme2voc(tmp_path / "work2", tmp_path / "absent.py") == {}
    assert "skipped, labelme's labelme2voc.py is not available" in capsys.readouterr().out


def test_peak_memory_is_the_childs_own_not_the_parents():
    """``ru_maxrss`` carries a parent's peak into its children; ``own_peak_rss_mb`` (VmHWM) does not."""
    import numpy as np

    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    from peak_memory import own_peak_rss_mb

    ballast = np.ones(600 * 2**20, dtype=np.uint8)  # 600 MiB touched: this process's peak is at least that
    assert own_peak_rss_mb() >= 600
    child = subprocess.run(
        [sys.executable, "-c", "import resource, sys; sys.path.insert(0, sys.argv[1]); "
         "from peak_memory import own_peak_rss_mb; "
         "print(own_peak_rss_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)",
         str(REPO_ROOT / "benchmarks")],
        capture_output=True, text=True, timeout=60, check=True)
    del ballast
    own, inherited = (float(v) for v in child.stdout.split())
    assert own < 200  # a bare Python interpreter
    assert inherited >= 600  # what the old measurement reported for the same child


def test_gpu_check_without_a_gpu_says_so_in_one_json_line():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO_ROOT),
               PYTHON=sys.executable)
    result = subprocess.run([str(REPO_ROOT / "benchmarks" / "gpu_check.sh")], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr[-2000:]
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert line["gpus"] == 0 and "no GPU" in line["error"]


def test_merge_puts_one_benchmarks_figures_into_the_results_and_keeps_the_notes(tmp_path):
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    import run_all

    run_all.write_results({"a_key": 1.0, "tf_crf_vs_pydensecrf": 1.5}, {}, {"x": 3.0}, tmp_path, quick=False)
    md = tmp_path / "RESULTS.md"
    md.write_text(md.read_text() + "\n## Notes\n\nwritten by hand\n")
    figures = tmp_path / "new.json"
    figures.write_text(json.dumps({"tf_crf_vs_pydensecrf": 2.5, "b_key": 7}))
    assert run_all.main(["--merge", str(figures), "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "results.json").read_text()) == {
        "a_key": 1.0, "b_key": 7.0, "tf_crf_vs_pydensecrf": 2.5}
    text = md.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert rows == ["| `a_key` | 1 |  |", "| `b_key` | 7 |  |", "| `tf_crf_vs_pydensecrf` | 2.5 | met (>= 2) |"]
    assert text.endswith("## Notes\n\nwritten by hand\n") and "| x | 3 | ok |" in text
