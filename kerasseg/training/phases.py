"""Training phases: which epochs train which layers at which rate, and the loop over them.

One phase trains everything (``finetune.frozen_epochs: 0``). Two-phase
fine-tuning trains the decoder on a frozen pretrained encoder first, then every
layer at ``learning_rate * finetune.learning_rate_factor``. Freezing an encoder
that has no pretrained weights would train the decoder on random features, so
that request is dropped with a warning that says how to silence it.

Each phase is resumable: its state is backed up after every epoch
(:class:`~kerasseg.training.callbacks.EpochBackup`), a finished phase leaves its
final weights as ``backup/phase<N>.done.weights.h5`` for the next one, and a
rerun starts at the first unfinished epoch of the first unfinished phase.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

from kerasseg.errors import TrainingError


@dataclasses.dataclass(frozen=True)
class Phase:
    """Epochs ``start`` (0-based, inclusive) to ``end`` (exclusive) of one ``model.fit``."""

    label: str
    start: int
    end: int
    learning_rate: float
    encoder_trainable: bool
    freezes: bool  # the encoder's trainability is set for this phase


def has_pretrained_encoder(model_options: dict) -> bool:
    """True when the builder options load pretrained encoder weights."""
    return model_options.get("encoder_weights") is not None


def plan_phases(config: Any, *, warn: Callable[[str], None]) -> list[Phase]:
    """The phases of ``config`` (see the module docstring)."""
    frozen = config.finetune.frozen_epochs
    if frozen > 0 and not has_pretrained_encoder(config.model.options):
        warn(
            f"warning: finetune.frozen_epochs={frozen} ignored: the encoder has no pretrained weights "
            "(model.options.encoder_weights is null), and freezing a randomly initialised encoder would "
            "train the decoder on random features. All layers train from the first epoch at "
            f"optimizer.learning_rate. Set finetune.frozen_epochs: 0 to silence this, or give "
            "model.options.encoder_weights ('imagenet' or a local weights file) to fine-tune."
        )
        frozen = 0
    lr = config.optimizer.learning_rate
    if frozen == 0:
        return [Phase("training", 0, config.training.epochs, lr, True, False)]
    phases = [Phase("frozen encoder", 0, frozen, lr, False, True)]
    if config.training.epochs > frozen:
        phases.append(Phase("all layers", frozen, config.training.epochs,
                            lr * config.finetune.learning_rate_factor, True, True))
    return phases


def done_marker(backup_root: str, index: int) -> str:
    """Final weights of phase ``index`` (0-based), kept for the next phase of a resumed run."""
    return os.path.join(backup_root, f"phase{index + 1}.done.weights.h5")


def phase_backup_dir(backup_root: str, index: int) -> str:
    return os.path.join(backup_root, f"phase{index + 1}")


def save_weights_atomically(model: Any, path: str) -> None:
    from kerasseg.atomic_files import replacing

    with replacing(path) as tmp:
        model.save_weights(tmp, overwrite=True)


def restore(model: Any, weights_path: str) -> None:
    """Load a backup (model and optimizer state) into a compiled ``model``.

    Raises:
        TrainingError: the file cannot be read or does not fit the model.
    """
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    try:
        model.load_weights(weights_path)
    except (OSError, ValueError) as e:
        raise TrainingError(
            f"{weights_path}: cannot resume from this backup ({e}); delete the run folder's backup/ "
            "folder to start the run afresh"
        ) from e


__all__ = ["Phase", "has_pretrained_encoder", "plan_phases", "done_marker", "phase_backup_dir",
           "save_weights_atomically", "restore"]
