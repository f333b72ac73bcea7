"""Training and inference memory, mixed_bfloat16 against float32, and oneDNN on this CPU.

Memory: every figure is the measuring process's own peak resident memory
(``VmHWM``; ``peak_memory.py`` says why ``ru_maxrss`` is not), each job in a
fresh process (``training_child.py``), oneDNN on as the ``kerasseg`` command
runs it:

* ``idle_peak_rss_mb``: TensorFlow + the paper's U-Net (base 64, depth 4) at
  512x512x1 (base 16 at 256x256x1 with ``--quick``), compiled, optimizer built, no step;
* ``train_peak_rss_mb`` / ``train_peak_rss_bf16_mb``: the same trained for one
  step (two with ``--quick``; the peak is reached in the first), batch 4, Dice+CE
  and the default metrics, float32 / mixed_bfloat16 (the bfloat16 one only
  with ``--quick`` or on a CPU with native bfloat16: emulated, one full-size
  step had not finished after 27 minutes on a shared 2-core AVX2 EPYC);
  ``train_over_idle_rss`` and ``bf16_vs_fp32_rss`` are their ratios;
* ``infer_peak_rss_mb``: sliding-window inference of one 2048x2048 image
  (``kerasseg.inference.predict_probabilities``, 512 tiles, overlap 0.5: 49
  tiles) by a U-Net of base 32 (the planner's ISBI width; 768x768 in 256 tiles
  and base 16 with ``--quick``), ``infer_large_seconds`` its time;
* ``train3d_peak_rss_mb``: 3D U-Net (base 16, depth 3) trained on 2 patches of
  64^3 (toy sizes with ``--quick``);
* ``infer3d_peak_rss_mb``: its sliding-window inference of a 160x256x256 int16
  volume (64^3 windows, overlap 0.5), ``infer3d_seconds`` its time.

Speed (in-memory tensors, 256x256x1, batch 4; after a two-step warm-up the
float32 and mixed_bfloat16 models take turns for 3 rounds of 4 steps and the
median round counts; one process per oneDNN setting):

* ``train_bf16_vs_fp32_speed`` (U-Net, base 32) and ``..._deeplabv3plus``
  (MobileNetV2, from scratch): mixed_bfloat16 images/s / float32 images/s
  (the DeepLabv3+ one only on a CPU with native bfloat16 or with ``--quick``);
* ``train_onednn_speedup_<model>``: float32 images/s with ``TF_ENABLE_ONEDNN_OPTS=1``
  / with ``=0`` (not with ``--quick``);
* ``cpu_native_bf16``: 1 when the CPU has AVX512_BF16 or AMX-BF16 (else bfloat16
  is emulated and slow).

Accuracy at equal steps (real data, through the CLI as a user runs it, ISBI
2012 fold 0 of ``isbi_folds.json``; ``bench_isbi.py`` has the commands):
``kerasseg plan --no-probe`` then ``kerasseg train`` for the same fixed number
of steps with ``training.mixed_precision`` false and ``mixed_bfloat16``, then
``kerasseg evaluate`` of each ``best.keras`` (not run with ``--quick``, nor on a
CPU that emulates bfloat16):

* ``train_bf16_dice_delta`` (U-Net) and ``..._deeplabv3plus``: validation mean
  Dice of the bfloat16 run minus that of the float32 run;
* ``train_bf16_vs_fp32_run_time_<model>``: bfloat16 training wall time /
  float32 (> 1: bfloat16 slower).

Run: ``python benchmarks/bench_training.py [--quick] [--parts memory speed accuracy]``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
CHILD = HERE / "training_child.py"
# models whose bfloat16 accuracy is measured, and their fixed run (epochs, steps per epoch)
DICE_RUNS = {"unet": (5, 20), "deeplabv3plus": (3, 15)}


EMULATED = ("this CPU has no native bfloat16 (AVX512_BF16/AMX), so mixed_bfloat16 is emulated and several "
            "times slower (train_bf16_vs_fp32_speed): not a candidate default here, and a full-size run would "
            "take hours")


def _native_bf16() -> bool:
    from kerasseg.planning.hardware import cpu_has_bf16

    return cpu_has_bf16()


def measure(job: str, *, onednn: bool = True, **arguments) -> dict:
    """Run one ``training_child.py`` job in a fresh process; its ``RESULT`` figures."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_ENABLE_ONEDNN_OPTS="1" if onednn else "0")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run([sys.executable, str(CHILD), job, json.dumps(arguments)],
                          env=env, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0 or "RESULT " not in proc.stdout:
        raise RuntimeError(f"training_child {job} {arguments} failed:\n{proc.stderr[-3000:]}")
    figures = json.loads(proc.stdout.split("RESULT ", 1)[1])
    print(f"  {job} {json.dumps(arguments)}: {json.dumps(figures)}", flush=True)
    return figures


def memory(quick: bool) -> dict[str, float]:
    # the peak is reached in the first step; quick mode only proves the jobs run (emulated bf16 is slow at 512)
    base, steps, size = (16, 2, 256) if quick else (64, 1, 512)
    unet = {"base": base, "size": size}
    volume = ({"base": 4, "patch": [16, 16, 16], "classes": 3} if quick
              else {"base": 16, "patch": [64, 64, 64], "classes": 3})
    jobs = {"idle": ("idle", unet),
            "fp32": ("train", {**unet, "batch": 4, "steps": steps, "policy": "float32"}),
            **({"bf16": ("train", {**unet, "batch": 4, "steps": steps, "policy": "mixed_bfloat16"})}
               if quick or _native_bf16() else {}),
            "infer": ("infer", {"base": 16 if quick else 32, "size": 768 if quick else 2048,
                                "tile": 256 if quick else 512}),
            "train3d": ("train3d", {**volume, "batch": 2, "steps": 2}),
            "infer3d": ("infer3d", {**volume, "volume": [24, 40, 40] if quick else [160, 256, 256]})}
    # a peak does not depend on what other processes do, so quick mode runs two at a time;
    # full mode runs one at a time so that the reported seconds are not shared
    with concurrent.futures.ThreadPoolExecutor(max_workers=2 if quick else 1) as pool:
        futures = {name: pool.submit(measure, job, **arguments) for name, (job, arguments) in jobs.items()}
        done = {name: future.result() for name, future in futures.items()}
    idle, fp32, infer, train3d, infer3d = (done[name] for name in ("idle", "fp32", "infer", "train3d", "infer3d"))
    figures = {
        "train_peak_rss_mb": round(fp32["peak_mb"], 1),
        "idle_peak_rss_mb": round(idle["peak_mb"], 1),
        "train_over_idle_rss": round(fp32["peak_mb"] / idle["peak_mb"], 3),
        "unet_parameters": float(fp32["params"]),
        "infer_peak_rss_mb": round(infer["peak_mb"], 1),
        "infer_large_seconds": round(infer["seconds"], 2),
        "train3d_peak_rss_mb": round(train3d["peak_mb"], 1),
        "infer3d_peak_rss_mb": round(infer3d["peak_mb"], 1),
        "infer3d_seconds": round(infer3d["seconds"], 2),
    }
    if "bf16" in done:
        figures["train_peak_rss_bf16_mb"] = round(done["bf16"]["peak_mb"], 1)
        figures["bf16_vs_fp32_rss"] = round(done["bf16"]["peak_mb"] / fp32["peak_mb"], 3)
    else:
        print(f"mixed_bfloat16 training peak skipped: {EMULATED}")
    return figures


def speed(quick: bool) -> dict[str, float]:
    models = ["unet"] if quick else ["unet", "deeplabv3plus"]
    shape = ({"size": 64, "batch": 2, "steps": 1, "rounds": 1} if quick
             else {"size": 256, "batch": 4, "steps": 4, "rounds": 3})
    # emulated bfloat16 DeepLabv3+ had not finished its 4 steps after 15 minutes: U-Net's ratio says enough
    skip = () if quick or _native_bf16() else tuple(f"{name}/mixed_bfloat16" for name in models if name != "unet")
    if skip:
        print(f"{', '.join(skip)} speed skipped: {EMULATED}")
    on = measure("speed", models=models, policies=["float32", "mixed_bfloat16"], skip=skip, **shape)["images_per_s"]
    figures = {"cpu_native_bf16": float(_native_bf16())}
    for name in models:
        if f"{name}/mixed_bfloat16" in on:
            suffix = "" if name == "unet" else f"_{name}"
            figures[f"train_bf16_vs_fp32_speed{suffix}"] = round(
                on[f"{name}/mixed_bfloat16"] / on[f"{name}/float32"], 3)
    if quick:  # the oneDNN-off process is the same job with one variable changed
        return figures
    off = measure("speed", onednn=False, models=models, policies=["float32"], **shape)["images_per_s"]
    for name in models:
        figures[f"train_onednn_speedup_{name}"] = round(on[f"{name}/float32"] / off[f"{name}/float32"], 3)
    return figures


def accuracy(quick: bool) -> dict[str, float]:
    """bfloat16 vs float32 at equal steps on ISBI fold 0, through the CLI (empty without the data)."""
    import bench_isbi

    if quick:  # four CLI trainings and evaluations; the commands are bench_isbi's, tested by its quick run
        print("accuracy part skipped in quick mode (run without --quick)")
        return {}
    if not _native_bf16():
        print(f"accuracy part skipped: {EMULATED}")
        return {}
    if not bench_isbi.ISBI_TRAIN.is_dir():
        print(f"accuracy part skipped: {bench_isbi.ISBI_TRAIN} is absent")
        return {}
    bench_isbi.WORK.mkdir(parents=True, exist_ok=True)
    log = bench_isbi.WORK / "bf16_commands.log"
    data = bench_isbi.convert_fold(0, bench_isbi.load_folds()[0], log)
    figures = {}
    for model, (epochs, steps) in DICE_RUNS.items():
        rows = {}
        for tag, policy in (("fp32", "false"), ("bf16", "mixed_bfloat16")):
            rows[tag] = bench_isbi.run_fold(
                model, 0, data, minutes=1.0, quick=False, log=log, crf=False, tag=f"_{tag}",
                run_length=[f"training.epochs={epochs}", f"training.steps_per_epoch={steps}",
                            "schedule.warmup_epochs=1", f"training.mixed_precision={policy}"])
        suffix = "" if model == "unet" else f"_{model}"
        figures[f"train_bf16_dice_delta{suffix}"] = round(rows["bf16"]["mean_dice"] - rows["fp32"]["mean_dice"], 4)
        figures[f"train_bf16_vs_fp32_run_time_{model}"] = round(
            rows["bf16"]["train_minutes"] / rows["fp32"]["train_minutes"], 3)
        print(f"{model}: {epochs} x {steps} steps, mean Dice float32 {rows['fp32']['mean_dice']:.4f}, "
              f"mixed_bfloat16 {rows['bf16']['mean_dice']:.4f}; minutes {rows['fp32']['train_minutes']:.1f} vs "
              f"{rows['bf16']['train_minutes']:.1f}", flush=True)
    return figures


PARTS = {"memory": memory, "speed": speed, "accuracy": accuracy}


def run(quick: bool, parts: tuple[str, ...] = tuple(PARTS)) -> dict[str, float]:
    """Every figure of the module docstring (of the ``parts`` asked for)."""
    sys.path.insert(0, str(HERE))
    results: dict[str, float] = {}
    for part in parts:
        results.update(PARTS[part](quick))
    for key in sorted(results):
        print(f"{key}: {results[key]}")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="toy sizes (tests the code, figures mean nothing)")
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS),
                        help="measure only these parts (default: all)")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.quick, tuple(args.parts)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
