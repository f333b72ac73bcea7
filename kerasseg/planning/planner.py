"""``make_plan``: fingerprint a dataset, decide a config, time it, and write it with its reasons."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from typing import Any, Callable

import yaml

from kerasseg.config import Config, from_dict, to_dict
from kerasseg.planning.fingerprint import Fingerprint, fingerprint_dataset
from kerasseg.planning.hardware import Hardware, detect_hardware
from kerasseg.planning.volume_rules import VolumeFingerprint, draft_volume, volume_fingerprint
from kerasseg.planning.rules import (
    Decision,
    PlanError,
    choose_batch_size,
    draft,
    fit_to_budget,
    untimed,
)

DEFAULT_BUDGET_MINUTES = 30.0


@dataclasses.dataclass
class Plan:
    """A training plan: the config, every decision with its reason, and what it rests on."""

    config: Config
    decisions: list[Decision]
    fingerprint: Fingerprint | VolumeFingerprint
    hardware: Hardware
    budget_minutes: float
    timing: dict[str, float] | None
    created: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "created": self.created, "budget_minutes": self.budget_minutes,
            "hardware": dataclasses.asdict(self.hardware), "timing": self.timing,
            "fingerprint": self.fingerprint.to_dict(),
            "decisions": [dataclasses.asdict(d) for d in self.decisions],
            "config": to_dict(self.config),
        }

    def table(self) -> str:
        """The fingerprint and the decisions as two plain-text tables."""
        lines = [f"fingerprint of {self.fingerprint.dataset} (split {self.fingerprint.split!r})"]
        rows = self.fingerprint.rows() + [("machine", self.hardware.description)]
        width = max(len(k) for k, _ in rows)
        lines += [f"  {k:<{width}}  {v}" for k, v in rows]
        lines.append(f"decisions (budget {self.budget_minutes:g} min of training)")
        shown = [(d.key, _compact(d.value), d.reason) for d in self.decisions]
        kw = max(len(k) for k, _, _ in shown)
        vw = min(40, max(len(v) for _, v, _ in shown))
        for key, value, reason in shown:
            if len(value) > vw:
                lines.append(f"  {key:<{kw}}  {value}")
                lines.append(f"  {'':<{kw}}  {'':<{vw}}  {reason}")
            else:
                lines.append(f"  {key:<{kw}}  {value:<{vw}}  {reason}")
        return "\n".join(lines) + "\n"

    def to_yaml(self) -> str:
        """The config as YAML, each planned key preceded by its reason as a comment."""
        reasons = {d.key: d.reason for d in self.decisions}
        fp = self.fingerprint
        head = [
            f"# Training plan for {fp.dataset}, written by `kerasseg plan` on {self.created}",
            f"# for {self.hardware.description}; budget {self.budget_minutes:g} min of training.",
            f"# Fingerprint ({fp.examples_measured} of {fp.splits.get(fp.split, 0)} {fp.split!r} examples): "
            f"{fp.summary()}.",
            "# Train with: kerasseg train THIS_FILE   (edit freely; every key is documented in the README)",
        ]
        out = head[:]
        for section, values in to_dict(self.config).items():
            if not isinstance(values, dict) or not values:
                out += _commented(reasons.get(section), "") + [f"{section}: {_flow(values)}"]
                continue
            out.append(f"{section}:")
            for key, value in values.items():
                out += _commented(reasons.get(f"{section}.{key}"), "  ")
                out.append(f"  {key}: {_flow(value)}")
        return "\n".join(out) + "\n"

    def write(self, path: str) -> tuple[str, str]:
        """Write the commented YAML to ``path`` and the whole plan to ``<path stem>.plan.json``, atomically."""
        from kerasseg.atomic_files import write_json, write_text

        path = os.fspath(path)
        write_text(path, self.to_yaml())
        sidecar = os.path.splitext(path)[0] + ".plan.json"
        write_json(sidecar, self.to_dict())
        return path, sidecar


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(", ", ": ")) if isinstance(value, (dict, list)) else str(value)


def _flow(value: Any) -> str:
    text = yaml.safe_dump([value], default_flow_style=True, width=10**6, sort_keys=False).strip()
    return text[1:-1]


def _commented(reason: str | None, indent: str) -> list[str]:
    return [f"{indent}# {reason}"] if reason else []


def default_run_dir(dataset_dir: str, model: str) -> str:
    """``runs/<dataset folder name>_<model>``: where a planned run goes unless told."""
    name = os.path.basename(os.path.normpath(os.path.abspath(dataset_dir))) or "dataset"
    return os.path.join("runs", f"{name}_{model}")


def make_plan(dataset_dir: str, *, budget_minutes: float = DEFAULT_BUDGET_MINUTES, model: str | None = None,
              run_dir: str | None = None, val_split: str | None = None, probe: bool = True,
              probe_steps: int = 5, memory_gb: float | None = None, seed: int = 0,
              log: Callable[[str], None] | None = None) -> Plan:
    """Plan a training run on the converted dataset ``dataset_dir``.

    Args:
        dataset_dir: a converted dataset (2D, or volumes: :mod:`kerasseg.planning.volume_rules`)
            with a ``train`` split.
        budget_minutes: minutes of training the plan should fill on this machine.
        model: architecture (default U-Net); see :data:`kerasseg.planning.PLANNABLE_MODELS`.
        run_dir: run folder written into the config (default ``runs/<dataset>_<model>``).
        val_split: validation split (default ``val`` when the dataset has one).
        probe: time a short run on this machine to size the run (``False``: 50 epochs).
        probe_steps: steps per probe epoch.
        memory_gb: memory to plan for instead of what is detected.
        seed: the run's seed.
        log: progress messages (default: silent).

    Raises:
        PlanError: a budget or model that cannot be planned.
        kerasseg.schema.SchemaError: not a converted dataset, or no ``train`` split.
    """
    from kerasseg import schema
    from kerasseg.planning.probe import activation_bytes, choose_cpu_precision, time_training

    if not budget_minutes > 0:
        raise PlanError(f"--budget-minutes must be > 0, got {budget_minutes}")
    info = schema.read_dataset_info(dataset_dir)
    if not info.splits.get("train"):
        raise PlanError(f"{dataset_dir}: no 'train' split with examples (splits: {info.splits}); "
                        "convert with --split train=0.8,val=0.2")
    if log:
        log(f"fingerprinting {dataset_dir} ...")
    hw = detect_hardware(memory_gb=memory_gb)
    fp: Fingerprint | VolumeFingerprint
    if info.is_volume:
        fp = volume_fingerprint(info, os.path.abspath(dataset_dir))
        name = model or "unet3d"
        config, decisions = draft_volume(fp, hw, model=model, dataset_dir=os.path.abspath(dataset_dir),
                                         run_dir=run_dir or default_run_dir(dataset_dir, name),
                                         val_split=val_split, seed=seed)
    else:
        fp = fingerprint_dataset(dataset_dir, split="train", seed=seed)
        name = model or "unet"
        config, decisions = draft(fp, hw, model=model, dataset_dir=os.path.abspath(dataset_dir),
                                  run_dir=run_dir or default_run_dir(dataset_dir, name), val_split=val_split,
                                  seed=seed)
    per_example = activation_bytes(config, channels=info.channels, num_classes=info.num_classes)
    n_train = int(info.splits["train"])
    batch, reason = choose_batch_size(per_example, hw, n_train=n_train, volumes=info.is_volume)
    config.training.batch_size = batch
    decisions.append(Decision("training.batch_size", batch, reason))
    if not info.is_volume:
        decisions.append(Decision("training.batchnorm_recalibration_steps",
                                  config.training.batchnorm_recalibration_steps,
                                  "batch-norm statistics re-estimated on training batches before each validation"))
    timing = None
    if probe:
        if hw.cpu_bf16 and not hw.gpu:
            setting, measured, reason = choose_cpu_precision(config, steps=probe_steps, log=log)
            config.training.mixed_precision = setting
            decisions = [Decision(d.key, setting, reason) if d.key == "training.mixed_precision" else d
                         for d in decisions]
        else:
            measured = time_training(config, steps=probe_steps, log=log)
        timing = dataclasses.asdict(measured)
        epochs, steps, run_length = fit_to_budget(budget_minutes, measured, n_train=n_train, batch_size=batch)
    else:
        run_length = untimed(n_train, batch)
    decisions += run_length
    values = to_dict(config)
    for d in run_length:
        section, _, key = d.key.partition(".")
        values[section][key] = d.value
    config = from_dict(values)
    created = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    return Plan(config=config, decisions=decisions, fingerprint=fp, hardware=hw, budget_minutes=float(budget_minutes),
                timing=timing, created=created)


__all__ = ["DEFAULT_BUDGET_MINUTES", "Plan", "default_run_dir", "make_plan"]
