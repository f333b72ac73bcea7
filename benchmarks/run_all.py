"""Run every benchmark and write ``RESULTS.md`` and ``results.json``.

Usage: ``python benchmarks/run_all.py [--quick] [--only NAME ...] [--out DIR]``, or
``python benchmarks/run_all.py --merge FIGURES.json`` to fold the figures of one
benchmark's own run (its ``--json`` file) into ``results.json`` and the key table
of ``RESULTS.md``, leaving the other keys and the notes below the table as they are.
Each ``bench_<name>.py`` exposes ``run(quick: bool) -> dict[str, float]``.
A benchmark that fails is reported as failed (with its error) and the others
still run; the exit status is non-zero if any failed.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import math
import os
import pathlib
import platform
import sys
import time
import traceback

HERE = pathlib.Path(__file__).resolve().parent
ORDER = ["convert", "pipeline", "models", "training", "crf", "tf_crf", "serving", "isbi", "hippocampus"]

GOALS = {
    "train_efficiency": (">=", 0.6),
    "pipeline_vs_memory": (">=", 0.95),
    "pipeline_vs_training_ratio": (">=", 10.0),
    "convert_vs_labelme2voc_200": (">=", 1.0),
    "convert_vs_labelme2voc_1000": (">=", 2.0),
    "crf_wrapper_overhead": ("<=", 1.05),
    "tf_crf_vs_pydensecrf": (">=", 2.0),
    "tf_crf_vs_pydensecrf_rgb": (">=", 2.0),
    "tf_crf_label_agreement": (">=", 0.995),
    "tf_crf_label_agreement_rgb": (">=", 0.995),
    "isbi_unet_mean_dice": (">=", 0.89),
    "isbi_segnet_mean_dice": (">=", 0.85),
    "isbi_deeplabv3plus_mean_dice": (">=", 0.85),
    "hippocampus_anterior_dice": (">=", 0.87),
    "hippocampus_posterior_dice": (">=", 0.85),
}


def _load(name: str):
    path = HERE / f"bench_{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(HERE.parent))
    spec.loader.exec_module(module)
    return module


def available() -> list[str]:
    present = {p.stem[len("bench_"):] for p in HERE.glob("bench_*.py")}
    return [n for n in ORDER if n in present] + sorted(present - set(ORDER))


def _verdict(key: str, value: float) -> str:
    if key not in GOALS or not isinstance(value, (int, float)) or math.isnan(value):
        return ""
    op, target = GOALS[key]
    ok = value >= target if op == ">=" else value <= target
    return f"{'met' if ok else 'missed'} ({op} {target:g})"


def write_results(results: dict, failures: dict, timings: dict, out_dir: pathlib.Path, quick: bool) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    lines = [
        "# Benchmark results",
        "",
        f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on "
        f"{platform.machine()} with {os.cpu_count()} CPU cores, Python {platform.python_version()}"
        + (" — **quick mode (toy sizes, not representative)**" if quick else "")
        + ". Speed figures are ratios of two measurements taken in one run.",
        "",
        "| key | value | goal |",
        "| --- | --- | --- |",
    ]
    lines += [_table_line(key, results[key]) for key in sorted(results)]
    lines += ["", "| benchmark | seconds | status |", "| --- | --- | --- |"]
    for name, seconds in timings.items():
        status = f"failed: {failures[name]}" if name in failures else "ok"
        lines.append(f"| {name} | {seconds:.0f} | {status} |")
    (out_dir / "RESULTS.md").write_text("\n".join(lines) + "\n")


def _table_line(key: str, value) -> str:
    shown = f"{value:.4g}" if isinstance(value, float) else str(value)
    return f"| `{key}` | {shown} | {_verdict(key, value)} |"


def merge_results(figures: dict, out_dir: pathlib.Path) -> None:
    """Put ``figures`` into ``out_dir``'s results.json and the key table of its RESULTS.md (rows
    kept sorted); every other key and everything after the table stays as it is."""
    path = out_dir / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    results.update({k: (float(v) if isinstance(v, (int, float)) else v) for k, v in figures.items()})
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    md = out_dir / "RESULTS.md"
    lines = md.read_text().splitlines()
    start = lines.index("| key | value | goal |") + 2
    end = start
    while end < len(lines) and lines[end].startswith("| `"):
        end += 1
    table = [_table_line(key, results[key]) for key in sorted(results)]
    md.write_text("\n".join(lines[:start] + table + lines[end:]) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="toy sizes, a few minutes in all")
    parser.add_argument("--only", nargs="*", choices=available(), help="run only these benchmarks")
    parser.add_argument("--out", type=pathlib.Path, default=HERE, help="where RESULTS.md/results.json go")
    parser.add_argument("--isbi-folds", type=int, nargs="*", default=None,
                        help="ISBI folds to run (default: all 5; quick: fold 0)")
    parser.add_argument("--isbi-minutes", type=float, default=10.0,
                        help="training minutes per ISBI fold given to `kerasseg plan --budget-minutes`")
    parser.add_argument("--hippocampus-minutes", type=float, default=8.0,
                        help="training minutes per hippocampus fold given to `kerasseg plan --budget-minutes`")
    parser.add_argument("--merge", type=pathlib.Path, default=None, metavar="FIGURES_JSON",
                        help="only merge these figures into OUT's results.json and RESULTS.md table")
    args = parser.parse_args(argv)
    if args.merge:
        merge_results(json.loads(args.merge.read_text()), args.out)
        print(f"merged {args.merge} into {args.out / 'results.json'} and {args.out / 'RESULTS.md'}")
        return 0

    results: dict[str, float] = {}
    failures: dict[str, str] = {}
    timings: dict[str, float] = {}
    for name in args.only or available():
        print(f"== bench_{name} ({'quick' if args.quick else 'full'})", flush=True)
        started = time.perf_counter()
        try:
            module = _load(name)
            if name == "isbi":
                figures = module.run(quick=args.quick, folds=args.isbi_folds, minutes_per_fold=args.isbi_minutes)
            elif name == "hippocampus":
                figures = module.run(quick=args.quick, minutes_per_fold=args.hippocampus_minutes)
            else:
                figures = module.run(quick=args.quick)
            results.update({k: (float(v) if isinstance(v, (int, float)) else v) for k, v in figures.items()})
        except Exception as e:  # a failed benchmark is reported, the others still run
            traceback.print_exc()
            failures[name] = f"{type(e).__name__}: {e}".replace("|", "/")[:200]
        timings[name] = time.perf_counter() - started
    write_results(results, failures, timings, args.out, args.quick)
    print(f"wrote {args.out / 'RESULTS.md'} and {args.out / 'results.json'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
