"""Accuracy on real data: ISBI 2012 EM membranes, 5-fold cross-validation, all through the CLI.

For each model and each fold of the fixed split in ``isbi_folds.json`` (24
training / 6 validation slices, seeded permutation, committed), the run is what
a user types:

1. ``masks2tfrecord image/ label/ DATA --class-map ... --split-file foldK.txt``
   (the fold's assignment, written from ``isbi_folds.json``);
2. ``kerasseg plan DATA --model NAME --budget-minutes M`` (fingerprint, rules,
   timing probe on this machine) writing ``plan.yaml``; the first fold of a model
   is probed, and the other folds keep its run length (``--no-probe`` plans with
   ``--set training.epochs=E --set training.steps_per_epoch=S`` from the first
   fold's plan), so every fold of a model trains for the same number of steps
   whatever else the machine is doing meanwhile;
3. ``kerasseg train plan.yaml --set training.max_minutes=null`` (the planned
   steps are kept even if the machine is busier than when probed, so the
   accuracy does not depend on other load; the wall time is reported);
4. ``kerasseg evaluate --model RUN/best.keras --data DATA --split val``, plain, with
   ``--crf`` and with ``--tta`` (the four flips averaged).

Figures per model (mean over the folds run): ``isbi_<model>_mean_dice`` (Dice
averaged over membrane and cell, the definition behind NVIDIA's published
0.89), ``_membrane_dice``, ``_membrane_iou``, ``_pixel_error`` (1 - pixel
accuracy; the U-Net paper's 0.0611 is on the hidden test set), ``_mean_dice_crf``,
``_membrane_dice_crf``, ``_mean_dice_tta``, ``_membrane_dice_tta``, ``_folds``, ``_budget_minutes`` (planned training minutes
per fold) and ``_train_minutes`` (measured). Per-fold rows and the validation
curves (foreground Dice against training minutes, from each run's
``history.csv``) go to ``_work/isbi/summary.json``; the curves are drawn in
``isbi_learning_curves.png`` beside this file (full runs only).

Usage: ``python benchmarks/bench_isbi.py [--quick] [--models unet ...]
[--folds 0 1 2 3 4] [--minutes-per-fold 6]``.
"""

from __future__ import annotations

import argparse
import csv
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
ISBI_TRAIN = SHARED / "isbi2012_membrane" / "data" / "membrane" / "train"
WORK = HERE / "_work" / "isbi"
CURVES_PNG = HERE / "isbi_learning_curves.png"
# label 0 (dark) = membrane, 255 = cell interior; neither is a background, so the
# foreground Dice that picks best.keras is the two-class mean Dice
CLASS_MAP = "0 membrane\n255 cell\n"
MODELS = ("unet", "segnet", "deeplabv3plus")
QUICK_MODELS = ("unet",)
# quick mode: toy sizes through the same commands (no probe, two steps)
QUICK_SET = {
    "unet": ["model.options={base_filters: 4, depth: 2, norm: batch}"],
    "segnet": ["model.options={base_filters: 8}"],
    "deeplabv3plus": ["model.options={backbone: mobilenetv2, alpha: 0.35, encoder_weights: null}"],
}

ANCHORS = {
    "NVIDIA TF2 U-Net, 5-fold mean Dice": 0.89,
    "U-Net paper pixel error (challenge test set)": 0.0611,
}


def load_folds() -> list[dict]:
    return json.loads((HERE / "isbi_folds.json").read_text())["folds"]


def _cli(*words: str, log: pathlib.Path) -> None:
    """Run one command as a user would (the installed entry points' modules), appending to ``log``."""
    programs = {"masks2tfrecord": [sys.executable, "-c",
                                   "import sys; from data_tools.cli import masks2tfrecord_main as m; sys.exit(m())"],
                "kerasseg": [sys.executable, "-m", "kerasseg"]}
    command = programs[words[0]] + list(words[1:])
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    with open(log, "a", encoding="utf-8") as out:
        out.write(f"\n$ {' '.join(words)}\n")
        out.flush()
        status = subprocess.run(command, cwd=WORK, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    if status != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"`{' '.join(words)}` exited with {status}; end of {log}:\n{tail}")


def convert_fold(k: int, fold: dict, log: pathlib.Path) -> pathlib.Path:
    """The fold's dataset (train + val splits), converted once with ``--split-file``."""
    data = WORK / f"fold{k}"
    if (data / "dataset.json").is_file():
        return data
    split_file = WORK / f"fold{k}_splits.txt"
    split_file.write_text("".join(f"{i} train\n" for i in fold["train"]) + "".join(f"{i} val\n" for i in fold["val"]))
    class_map = WORK / "class_map.txt"
    class_map.write_text(CLASS_MAP)
    _cli("masks2tfrecord", str(ISBI_TRAIN / "image"), str(ISBI_TRAIN / "label"), str(data), "--class-map",
         str(class_map), "--split-file", str(split_file), "--no-progress", log=log)
    return data


def _scores(report: pathlib.Path) -> dict:
    result = json.loads(report.read_text())
    summary = result.get("summary", result)
    membrane = summary["per_class"]["membrane"]
    return {"mean_dice": summary["mean_dice"], "membrane_dice": membrane["dice"], "membrane_iou": membrane["iou"],
            "pixel_error": 1.0 - summary["pixel_accuracy"]}


def _curve(history_csv: pathlib.Path) -> list[tuple[float, float]]:
    with open(history_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [(float(r["minutes"]), float(r["val_foreground_dice"])) for r in rows
            if r.get("minutes") and r.get("val_foreground_dice")]


def run_fold(model: str, k: int, data: pathlib.Path, *, minutes: float, quick: bool, log: pathlib.Path,
             run_length: list[str] | None = None, crf: bool = True, tag: str = "") -> dict:
    """Plan, train and evaluate one model on one fold (the module docstring's steps 2-4).

    ``run_length``: ``--set`` overrides of the plan (planned with ``--no-probe`` when given);
    ``crf=False`` skips the CRF evaluation (its keys are then absent); ``tag`` names the
    run folder ``<model><tag>_fold<k>`` so that variants of a run do not overwrite each other.
    """
    name = f"{model}{tag}_fold{k}"
    run_dir = WORK / "runs" / name
    plan = WORK / "plans" / f"{name}.yaml"
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a fresh run each time: a leftover would resume instead
    plan_args = ["--budget-minutes", f"{minutes:g}"] + (["--no-probe"] if quick or run_length else [])
    _cli("kerasseg", "plan", str(data), "--model", model, "--run-dir", str(run_dir), "--out", str(plan),
         *plan_args, log=log)
    overrides = ["training.max_minutes=null", *(run_length or [])]
    if quick:
        overrides += QUICK_SET[model] + ["training.epochs=1", "training.steps_per_epoch=2", "training.batch_size=2",
                                         "data.image_size=[64,64]", "training.batchnorm_recalibration_steps=1"]
    started = time.perf_counter()
    _cli("kerasseg", "train", str(plan), *[w for o in overrides for w in ("--set", o)], log=log)
    train_minutes = (time.perf_counter() - started) / 60.0
    limit = ["--limit", "1"] if quick else []
    model_path = run_dir / "best.keras"
    plain, crf_report = run_dir / "eval_val.json", run_dir / "eval_val_crf.json"
    tta_report = run_dir / "eval_val_tta.json"
    _cli("kerasseg", "evaluate", "--model", str(model_path), "--data", str(data), "--split", "val",
         "--report", str(plain), *limit, log=log)
    _cli("kerasseg", "evaluate", "--model", str(model_path), "--data", str(data), "--split", "val", "--tta",
         "--report", str(tta_report), *limit, log=log)
    if crf:
        _cli("kerasseg", "evaluate", "--model", str(model_path), "--data", str(data), "--split", "val", "--crf",
             "--report", str(crf_report), *limit, log=log)
    import yaml

    trained = yaml.safe_load((run_dir / "config.yaml").read_text())["training"]  # the plan with the overrides
    with_crf = {f"{key}_crf": v for key, v in _scores(crf_report).items()} if crf else {}
    with_tta = {f"{key}_tta": v for key, v in _scores(tta_report).items()}
    row = {"fold": k, **_scores(plain), **with_crf, **with_tta,
           "train_minutes": train_minutes, "epochs": trained["epochs"], "steps_per_epoch": trained["steps_per_epoch"],
           "curve": _curve(run_dir / "history.csv")}
    shown_crf = f" (CRF {row['mean_dice_crf']:.4f})" if crf else ""
    print(f"{model}{tag} fold {k}: mean Dice {row['mean_dice']:.4f}{shown_crf} (flip TTA "
          f"{row['mean_dice_tta']:.4f}), membrane Dice "
          f"{row['membrane_dice']:.4f}, pixel error {row['pixel_error']:.4f}; {row['epochs']} x "
          f"{row['steps_per_epoch']} steps in {train_minutes:.1f} min", flush=True)
    return row


def plot_curves(per_model: dict[str, list[dict]], path: pathlib.Path, minutes: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = {"unet": "tab:blue", "segnet": "tab:orange", "deeplabv3plus": "tab:green"}
    for model, rows in per_model.items():
        for i, row in enumerate(rows):
            if row["curve"]:
                xs, ys = zip(*row["curve"])
                ax.plot(xs, ys, marker="o", markersize=3, color=colours.get(model), alpha=0.8,
                        label=model if i == 0 else None)
    ax.axhline(0.89, color="grey", linestyle="--", linewidth=1, label="NVIDIA U-Net, 5 folds (0.89)")
    ax.set_xlabel("training minutes (2 CPU cores)")
    ax.set_ylabel("validation mean Dice (membrane, cell)")
    ax.set_title(f"ISBI 2012, planned by `kerasseg plan --budget-minutes {minutes:g}`, one line per fold")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(quick: bool = False, *, models=None, folds=None, minutes_per_fold: float = 6.0) -> dict:
    """Run the cross-validation; returns the ``isbi_*`` figures (empty if the data is absent)."""
    if not ISBI_TRAIN.is_dir():
        print(f"skipped: {ISBI_TRAIN} is absent (ISBI 2012 data lives in ../shared/data)")
        return {}
    models = list(models or (QUICK_MODELS if quick else MODELS))
    fold_list = load_folds()
    folds = list(folds if folds is not None else ([0] if quick else range(len(fold_list))))
    WORK.mkdir(parents=True, exist_ok=True)
    log = WORK / "commands.log"
    summary = WORK / "summary.json"
    # runs of other models (or folds) from an earlier invocation stay in the summary and the plot
    earlier = json.loads(summary.read_text()) if summary.is_file() and not quick else {}
    per_model: dict[str, list[dict]] = {}
    for model in models:
        run_length = None
        for k in folds:
            data = convert_fold(k, fold_list[k], log)
            per_model.setdefault(model, []).append(
                run_fold(model, k, data, minutes=minutes_per_fold, quick=quick, log=log, run_length=run_length))
            if run_length is None and not quick:
                probed = json.loads((WORK / "plans" / f"{model}_fold{k}.plan.json").read_text())["config"]
                run_length = [f"training.epochs={probed['training']['epochs']}",
                              f"training.steps_per_epoch={probed['training']['steps_per_epoch']}",
                              f"schedule.warmup_epochs={probed['schedule']['warmup_epochs']}",
                              f"training.mixed_precision={json.dumps(probed['training']['mixed_precision'])}"]
    merged = {**earlier, **per_model}
    summary.write_text(json.dumps(merged, indent=2))
    if not quick:
        plot_curves(merged, CURVES_PNG, minutes_per_fold)
    figures: dict[str, float] = {}
    for model, rows in per_model.items():
        for key in ("mean_dice", "membrane_dice", "membrane_iou", "pixel_error", "mean_dice_crf",
                    "membrane_dice_crf", "mean_dice_tta", "membrane_dice_tta", "train_minutes"):
            if all(key in r for r in rows):
                figures[f"isbi_{model}_{key}"] = float(sum(r[key] for r in rows) / len(rows))
        figures[f"isbi_{model}_folds"] = float(len(rows))
        figures[f"isbi_{model}_budget_minutes"] = float(minutes_per_fold)
    print("anchors: " + "; ".join(f"{k} {v}" for k, v in ANCHORS.items()))
    for key in sorted(figures):
        print(f"{key}: {figures[key]:.4f}")
    return figures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="ISBI 2012 membrane 5-fold accuracy benchmark, through the CLI")
    parser.add_argument("--quick", action="store_true", help="toy sizes, one fold, U-Net only (tests the path)")
    parser.add_argument("--models", nargs="*", default=None, choices=list(MODELS))
    parser.add_argument("--folds", nargs="*", type=int)
    parser.add_argument("--minutes-per-fold", type=float, default=6.0, help="the plan's training budget per fold")
    parser.add_argument("--json", type=pathlib.Path, default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    figures = run(args.quick, models=args.models, folds=args.folds, minutes_per_fold=args.minutes_per_fold)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
