"""Accuracy on real MRI volumes: MSD hippocampus, 5-fold cross-validation, all through the CLI.

For each fold of the fixed split in ``hippocampus_folds.json`` (160 training /
40 validation volumes, seeded, committed), the run is what a user types:

1. ``volumes2tfrecord imagesTr labelsTr DATA --labels labels.txt --split-file foldK.txt --workers 2``
   (timed on fold 0: the conversion speed in volumes per second);
2. ``kerasseg plan DATA --budget-minutes M`` (dataset.json fingerprint, volume
   rules, timing probe on this machine) writing ``plan.yaml``; fold 0 is probed
   and the other folds keep its run length (``--no-probe`` plus
   ``--set training.epochs/steps_per_epoch``), so every fold trains the same steps;
3. ``kerasseg train plan.yaml --set training.max_minutes=null``;
4. ``kerasseg evaluate --model RUN/best.keras --data DATA --split val``
   (Dice per class, HD95 in mm from each volume's spacing), plain and with
   ``--tta`` (the 8 flips of the three axes averaged);
5. fold 0 only: ``kerasseg predict`` on the largest volume (in voxels) in a fresh
   process, timed, with that process's own peak memory (``VmHWM``).

Figures: ``hippocampus_anterior_dice``, ``hippocampus_posterior_dice`` (means over
the folds of the dataset-level Dice of the validation volumes),
``hippocampus_hd95_mm`` (mean over the folds and the two classes of the
per-volume mean HD95), the same three with ``_tta`` (``evaluate --tta``; nnU-Net's
published figures also average mirrored predictions), ``hippocampus_folds``, ``hippocampus_budget_minutes``
(planned training minutes per fold), ``hippocampus_train_minutes`` (measured),
``hippocampus_convert_volumes_per_s``, ``hippocampus_predict_largest_seconds``
(the whole ``kerasseg predict`` process: start, load, infer, write) and
``hippocampus_predict_peak_rss_mb``. Per-fold rows go to
``_work/hippocampus/summary.json``.

Usage: ``python benchmarks/bench_hippocampus.py [--quick] [--folds 0 1 2 3 4] [--minutes-per-fold 8]``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
SHARED = pathlib.Path(os.environ.get("KERASSEG_SHARED_DATA", REPO.parent / "shared" / "data"))
SOURCE = SHARED / "msd_hippocampus"
WORK = HERE / "_work" / "hippocampus"
LABELS = "background\nanterior\nposterior\n"
ANCHORS = {"nnU-Net anterior Dice (5-fold CV)": 0.90, "nnU-Net posterior Dice (5-fold CV)": 0.89}
QUICK_SET = ["model.options={base_filters: 2, depth: 2, norm: instance}", "training.epochs=1",
             "training.steps_per_epoch=2", "data.image_size=[16,16,16]", "training.mixed_precision=false"]

# The whole `kerasseg predict` process, reporting its own peak resident memory (peak_memory.py).
_PREDICT_WITH_PEAK = (
    "import sys\n"
    f"sys.path.insert(0, {str(HERE)!r})\n"
    "from peak_memory import own_peak_rss_mb\n"
    "from kerasseg.cli import main\n"
    "status = main(sys.argv[1:])\n"
    "print('peak_rss_kb', round(own_peak_rss_mb() * 1024))\n"
    "sys.exit(status)\n"
)


def load_folds() -> list[dict]:
    return json.loads((HERE / "hippocampus_folds.json").read_text())["folds"]


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))


def _cli(*words: str, log: pathlib.Path) -> str:
    """Run one command as a user would; its output is appended to ``log`` and returned."""
    programs = {"volumes2tfrecord": [sys.executable, "-c", "import sys; from data_tools.cli import "
                                     "volumes2tfrecord_main as m; sys.exit(m())"],
                "kerasseg": [sys.executable, "-m", "kerasseg"],
                "kerasseg-peak": [sys.executable, "-c", _PREDICT_WITH_PEAK]}
    command = programs[words[0]] + list(words[1:])
    done = subprocess.run(command, cwd=WORK, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, errors="replace")
    with open(log, "a", encoding="utf-8") as out:
        out.write(f"\n$ {' '.join(words)}\n{done.stdout}")
    if done.returncode != 0:
        raise RuntimeError(f"`{' '.join(words)}` exited with {done.returncode}; its output:\n{done.stdout[-3000:]}")
    return done.stdout


def convert_fold(k: int, fold: dict, log: pathlib.Path, *, only: set[str] | None = None) -> tuple[pathlib.Path, float]:
    """The fold's dataset (train + val splits) and the seconds its conversion took (0 when reused)."""
    data = WORK / f"fold{k}"
    if (data / "dataset.json").is_file():
        return data, 0.0
    split_file = WORK / f"fold{k}_splits.txt"
    train = [i for i in fold["train"] if only is None or i in only]
    val = [i for i in fold["val"] if only is None or i in only]
    split_file.write_text("".join(f"{i} train\n" for i in train) + "".join(f"{i} val\n" for i in val))
    labels = WORK / "labels.txt"
    labels.write_text(LABELS)
    images, targets = SOURCE / "imagesTr", SOURCE / "labelsTr"
    if only is not None:  # quick mode: a small copy of the cases used
        images, targets = WORK / "quick_images", WORK / "quick_labels"
        for folder, origin in ((images, SOURCE / "imagesTr"), (targets, SOURCE / "labelsTr")):
            folder.mkdir(parents=True, exist_ok=True)
            for case in only:
                shutil.copy(origin / f"{case}.nii.gz", folder / f"{case}.nii.gz")
    started = time.perf_counter()
    _cli("volumes2tfrecord", str(images), str(targets), str(data), "--labels", str(labels), "--split-file",
         str(split_file), "--workers", "2", log=log)
    return data, time.perf_counter() - started


def _scores(report: pathlib.Path) -> dict:
    result = json.loads(report.read_text())
    summary = result.get("summary", result)
    per_class = summary["per_class"]
    hd95 = [per_class[name].get("hd95") for name in ("anterior", "posterior")]
    return {"anterior_dice": per_class["anterior"]["dice"], "posterior_dice": per_class["posterior"]["dice"],
            "hd95_mm": sum(float(v) for v in hd95 if v is not None) / max(1, sum(v is not None for v in hd95))}


def _largest_volume(cases: list[str]) -> str:
    import SimpleITK as sitk

    def voxels(case: str) -> int:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(SOURCE / "imagesTr" / f"{case}.nii.gz"))
        reader.ReadImageInformation()
        size = reader.GetSize()
        return int(size[0] * size[1] * size[2])

    return max(cases, key=voxels)


def run_fold(k: int, data: pathlib.Path, *, minutes: float, quick: bool, log: pathlib.Path,
             run_length: list[str] | None) -> dict:
    run_dir = WORK / "runs" / f"unet3d_fold{k}"
    plan = WORK / "plans" / f"unet3d_fold{k}.yaml"
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a fresh run each time: a leftover would resume instead
    plan_args = ["--budget-minutes", f"{minutes:g}"] + (["--no-probe"] if quick or run_length else [])
    _cli("kerasseg", "plan", str(data), "--model", "unet3d", "--run-dir", str(run_dir), "--out", str(plan),
         *plan_args, log=log)
    overrides = ["training.max_minutes=null", *(run_length or []), *(QUICK_SET if quick else [])]
    started = time.perf_counter()
    _cli("kerasseg", "train", str(plan), *[w for o in overrides for w in ("--set", o)], log=log)
    train_minutes = (time.perf_counter() - started) / 60.0
    report, tta_report = run_dir / "eval_val.json", run_dir / "eval_val_tta.json"
    limit = ["--limit", "2"] if quick else []
    _cli("kerasseg", "evaluate", "--model", str(run_dir / "best.keras"), "--data", str(data), "--split", "val",
         "--report", str(report), *limit, log=log)
    _cli("kerasseg", "evaluate", "--model", str(run_dir / "best.keras"), "--data", str(data), "--split", "val",
         "--tta", "--report", str(tta_report), *limit, log=log)
    import yaml

    trained = yaml.safe_load((run_dir / "config.yaml").read_text())["training"]
    row = {"fold": k, **_scores(report), **{f"{key}_tta": v for key, v in _scores(tta_report).items()},
           "train_minutes": train_minutes, "epochs": trained["epochs"], "steps_per_epoch": trained["steps_per_epoch"]}
    print(f"fold {k}: anterior Dice {row['anterior_dice']:.4f}, posterior Dice {row['posterior_dice']:.4f}, "
          f"HD95 {row['hd95_mm']:.2f} mm (flip TTA: {row['anterior_dice_tta']:.4f}, {row['posterior_dice_tta']:.4f}, "
          f"{row['hd95_mm_tta']:.2f} mm); {row['epochs']} x {row['steps_per_epoch']} steps in "
          f"{train_minutes:.1f} min", flush=True)
    return row


def time_predict(run_dir: pathlib.Path, case: str, log: pathlib.Path) -> dict:
    out = WORK / "predict"
    if out.exists():
        shutil.rmtree(out)
    started = time.perf_counter()
    text = _cli("kerasseg-peak", "predict", "--model", str(run_dir / "best.keras"),
                str(SOURCE / "imagesTr" / f"{case}.nii.gz"), "--out", str(out), log=log)
    seconds = time.perf_counter() - started
    peak = next((int(line.split()[1]) for line in text.splitlines() if line.startswith("peak_rss_kb")), -1)
    return {"predict_largest_seconds": seconds, "predict_peak_rss_mb": peak / 1024.0, "predict_case": case}


def run(quick: bool = False, *, folds=None, minutes_per_fold: float = 8.0) -> dict:
    """Run the cross-validation; returns the ``hippocampus_*`` figures (empty if the data is absent)."""
    global WORK
    # the quick run (the test suite's) never touches a full run's folder
    WORK = HERE / "_work" / ("hippocampus_quick" if quick else "hippocampus")
    if not (SOURCE / "imagesTr").is_dir():
        print(f"skipped: {SOURCE} is absent (msd_hippocampus lives in ../shared/data)")
        return {}
    fold_list = load_folds()
    folds = list(folds if folds is not None else ([0] if quick else range(len(fold_list))))
    if quick and WORK.exists():
        shutil.rmtree(WORK)
    WORK.mkdir(parents=True, exist_ok=True)
    log = WORK / "commands.log"
    only = set(fold_list[0]["train"][:4] + fold_list[0]["val"][:2]) if quick else None
    rows, run_length, extra = [], None, {}
    for k in folds:
        data, seconds = convert_fold(k, fold_list[k], log, only=only)
        if seconds and "convert_volumes_per_s" not in extra:
            extra["convert_volumes_per_s"] = (len(only) if only else 200) / seconds
        rows.append(run_fold(k, data, minutes=minutes_per_fold, quick=quick, log=log, run_length=run_length))
        if run_length is None and not quick:
            probed = json.loads((WORK / "plans" / f"unet3d_fold{k}.plan.json").read_text())["config"]
            run_length = [f"training.epochs={probed['training']['epochs']}",
                          f"training.steps_per_epoch={probed['training']['steps_per_epoch']}",
                          f"schedule.warmup_epochs={probed['schedule']['warmup_epochs']}",
                          f"training.mixed_precision={json.dumps(probed['training']['mixed_precision'])}"]
        if "predict_largest_seconds" not in extra:
            cases = sorted(only) if only else fold_list[k]["val"]
            extra.update(time_predict(WORK / "runs" / f"unet3d_fold{k}", _largest_volume(cases), log))
    (WORK / "summary.json").write_text(json.dumps({"folds": rows, **extra}, indent=2))
    figures = {f"hippocampus_{key}": float(sum(r[key] for r in rows) / len(rows))
               for key in ("anterior_dice", "posterior_dice", "hd95_mm", "anterior_dice_tta", "posterior_dice_tta",
                           "hd95_mm_tta", "train_minutes")}
    figures["hippocampus_folds"] = float(len(rows))
    figures["hippocampus_budget_minutes"] = float(minutes_per_fold)
    for key in ("convert_volumes_per_s", "predict_largest_seconds", "predict_peak_rss_mb"):
        if key in extra:
            figures[f"hippocampus_{key}"] = float(extra[key])
    print("anchors: " + "; ".join(f"{k} {v}" for k, v in ANCHORS.items()))
    for key in sorted(figures):
        print(f"{key}: {figures[key]:.4f}")
    return figures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="MSD hippocampus 5-fold accuracy benchmark, through the CLI")
    parser.add_argument("--quick", action="store_true", help="toy sizes, 6 volumes, one fold (tests the path)")
    parser.add_argument("--folds", nargs="*", type=int)
    parser.add_argument("--minutes-per-fold", type=float, default=8.0, help="the plan's training budget per fold")
    parser.add_argument("--json", type=pathlib.Path, default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    figures = run(args.quick, folds=args.folds, minutes_per_fold=args.minutes_per_fold)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
