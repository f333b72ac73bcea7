"""The learning-curve PNG of a run (matplotlib, headless).

Three panels per epoch: the losses; the summary scores (mean Dice, foreground
Dice, mean IoU, pixel accuracy; training solid, validation dashed); and the
validation Dice of every class, so a class stuck at 0 is visible even when
the mean looks fine.
"""

from __future__ import annotations

from typing import Sequence

from kerasseg.atomic_files import replacing

_SUMMARIES = ("foreground_dice", "mean_dice", "mean_iou", "pixel_accuracy")


def plot_learning_curves(history: dict[str, list[float]], path: str, *, title: str = "",
                         class_names: Sequence[str] | None = None) -> str | None:
    """Write the learning-curve PNG of ``history`` (``history.csv`` columns) to ``path``.

    Args:
        history: ``{column: values per epoch}`` with an ``epoch`` column.
        path: the PNG to write (atomically).
        title: figure title.
        class_names: class names, to label the per-class panel (``val_dice_<class>`` columns).

    Returns:
        ``path``, or ``None`` when ``history`` has no epoch.
    """
    if not history.get("epoch"):
        return None
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    from kerasseg.metrics import class_metric_names

    epochs = [int(e) + 1 for e in history["epoch"]]
    fig = Figure(figsize=(15, 4), dpi=100)
    ax_loss, ax_metric, ax_class = (fig.add_subplot(1, 3, i) for i in (1, 2, 3))
    for key, values in sorted(history.items()):
        style = "--" if key.startswith("val_") else "-"
        if key.endswith("loss"):
            ax_loss.plot(epochs, values, marker="o", markersize=3, label=key, linestyle=style)
        elif key.removeprefix("val_") in _SUMMARIES:
            ax_metric.plot(epochs, values, marker="o", markersize=3, label=key, linestyle=style)
    per_class = [k for k in history if k.startswith("val_dice_")]
    labels = {}
    for name, key in zip(class_names or [], class_metric_names(class_names or [])):
        labels[f"val_dice_{key}"] = f"{name} (val Dice)"
    for key in sorted(per_class):
        ax_class.plot(epochs, history[key], marker="o", markersize=3, label=labels.get(key, key))
    for ax, label in ((ax_loss, "loss"), (ax_metric, "score"), (ax_class, "validation Dice per class")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    ax_class.set_ylim(-0.02, 1.02)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with replacing(path) as tmp:
        fig.savefig(tmp)
    return path


__all__ = ["plot_learning_curves"]
