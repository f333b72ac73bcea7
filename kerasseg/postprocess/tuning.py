"""Grid search of dense-CRF parameters against ground truth (NumPy + pydensecrf only).

:func:`tune_crf` refines every image with every setting of a grid, scores the
label maps against the truth (:mod:`kerasseg.postprocess.scores`) and compares
them with the un-refined prediction (arg-max of the probabilities). The
``kerasseg crf-tune`` command feeds it a model's predictions on a validation
split; tests and benchmarks feed it arrays.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from kerasseg.postprocess.batch import imap_tasks
from kerasseg.postprocess.crf import check_probabilities, dense_crf
from kerasseg.errors import CRFConfigError, CRFInputError
from kerasseg.postprocess.params import CRFParams
from kerasseg.postprocess.scores import ScoreAccumulator

#: the default search: 3 x 3 x 2 x 2 = 36 settings around the reference values.
DEFAULT_GRID: dict[str, list[Any]] = {
    "bilateral_sxy": [10, 40, 80],
    "bilateral_srgb": [5, 13, 30],
    "bilateral_compat": [3, 10],
    "gaussian_compat": [1, 3],
}

METRICS = ("dice", "mean_dice", "pixel_accuracy", "boundary_accuracy")


def expand_grid(grid: Mapping[str, Sequence[Any]], base: CRFParams | None = None) -> list[dict[str, Any]]:
    """Cartesian product of ``grid`` as a list of ``{name: value}`` settings.

    Raises:
        CRFConfigError: unknown parameter names, empty value lists, or a setting
            that is not a valid :class:`CRFParams`.
    """
    base = base or CRFParams()
    if not isinstance(grid, Mapping) or not grid:
        raise CRFConfigError("grid must be a non-empty mapping {parameter: [values...]}")
    allowed = [n for n in CRFParams.field_names() if n != "enabled"]
    names = list(grid)
    for name in names:
        if name not in allowed:
            raise CRFConfigError(f"grid: unknown CRF parameter {name!r}; known: {allowed}")
    values = []
    for name in names:
        v = grid[name]
        v = list(v) if isinstance(v, (list, tuple)) else [v]
        if not v:
            raise CRFConfigError(f"grid: {name} has no values")
        values.append(v)
    settings = [dict(zip(names, combo)) for combo in itertools.product(*values)]
    for s in settings:
        try:
            base.replace(**s)
        except CRFConfigError as e:
            raise CRFConfigError(f"grid setting {s}: {e}") from None
    return settings


def parse_grid(text: str) -> dict[str, list[Any]]:
    """Parse ``"bilateral_srgb=5,13,30;bilateral_compat=3,10"`` into a grid mapping.

    Values are ints, floats, ``true``/``false`` or bare strings (``diag``).
    """
    grid: dict[str, list[Any]] = {}
    for part in filter(None, (p.strip() for p in text.replace("\n", ";").split(";"))):
        name, sep, vals = part.partition("=")
        if not sep or not name.strip() or not vals.strip():
            raise CRFConfigError(f"grid: expected NAME=V1,V2,... , got {part!r}")
        grid[name.strip()] = [_scalar(v.strip()) for v in vals.split(",") if v.strip()]
    if not grid:
        raise CRFConfigError("grid: empty specification")
    return grid


def _scalar(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


@dataclasses.dataclass
class TuningResult:
    """Outcome of :func:`tune_crf`.

    Attributes:
        metric: the score used to pick the best setting.
        baseline: scores of the un-refined prediction.
        results: one ``{"setting": {...}, "scores": {...}}`` per grid setting, in grid order.
        best_index: index into ``results`` of the best setting.
        best_params: ``base`` with the best setting applied; ``enabled`` is True only
            when that setting scored strictly better than the baseline.
    """

    metric: str
    baseline: dict[str, Any]
    results: list[dict[str, Any]]
    best_index: int
    best_params: CRFParams

    @property
    def improved(self) -> bool:
        return self.best_params.enabled

    @property
    def best_scores(self) -> dict[str, Any]:
        return self.results[self.best_index]["scores"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "baseline": self.baseline,
            "results": self.results,
            "best_index": self.best_index,
            "best_params": self.best_params.to_dict(),
            "improved": self.improved,
        }

    def format_table(self) -> str:
        """A plain-text table: one row per setting, the baseline first."""
        names = list(self.results[0]["setting"]) if self.results else []
        head = names + ["dice", "mean_dice", "pixel_acc", "boundary_acc", "d_dice"]
        rows = [["(no CRF)"] + [""] * (len(names) - 1) + _score_cells(self.baseline, None)] if names else []
        for i, r in enumerate(self.results):
            cells = [_fmt(r["setting"][n]) for n in names] + _score_cells(r["scores"], self.baseline)
            if i == self.best_index:
                cells[-1] += " *"
            rows.append(cells)
        widths = [max(len(h), *(len(row[j]) for row in rows)) for j, h in enumerate(head)]
        line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))  # noqa: E731
        return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in rows])


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _score_cells(scores: Mapping[str, Any], baseline: Mapping[str, Any] | None) -> list[str]:
    cells = [f"{scores[m]:.4f}" for m in METRICS]
    delta = "" if baseline is None else f"{scores['dice'] - baseline['dice']:+.4f}"
    return cells + [delta]


# Worker-side state: the images go to each worker once (initializer), tasks carry indices.
_STATE: dict[str, Any] = {}


def _init_worker(images: Sequence[Any], probabilities: Sequence[Any]) -> None:
    _STATE["images"] = images
    _STATE["probabilities"] = probabilities


def _label_task(task: tuple[int, dict]) -> np.ndarray:
    i, kwargs = task
    _, labels = dense_crf(_STATE["images"][i], _STATE["probabilities"][i], **kwargs)
    return labels


def tune_crf(
    images: Sequence[Any],
    probabilities: Sequence[Any],
    labels: Sequence[Any],
    grid: Mapping[str, Sequence[Any]] | None = None,
    n_jobs: int | None = 1,
    *,
    base: CRFParams | Mapping[str, Any] | None = None,
    num_classes: int | None = None,
    ignore_index: int | None = 255,
    band: int = 3,
    metric: str = "dice",
    names: Sequence[str] | None = None,
    progress: Callable[[int, int, dict], object] | None = None,
) -> TuningResult:
    """Grid-search CRF parameters on images with known labels.

    Args:
        images: per-image ``(H, W[, C])`` arrays (any dtype :func:`dense_crf` accepts).
        probabilities: per-image ``(H, W, K)`` softmax (or ``(H, W, 1)`` sigmoid) outputs.
        labels: per-image ``(H, W)`` true class ids; ``ignore_index`` pixels are skipped.
        grid: ``{parameter: [values]}``; every combination is tried
            (default :data:`DEFAULT_GRID`).
        n_jobs: worker processes for the CRF runs.
        base: parameters not in the grid (default: the reference parameters).
        num_classes: K (default: from the probabilities; 2 for sigmoid maps).
        ignore_index: truth value excluded from scoring.
        band: half-width in pixels of the boundary band for ``boundary_accuracy``.
        metric: score that picks the best setting, one of :data:`METRICS`.
        names: per-image names for error messages.
        progress: called as ``progress(done, total, setting)`` after each setting.

    Returns:
        A :class:`TuningResult` (baseline scores, scores per setting, best parameters).

    Raises:
        CRFInputError: mismatched lengths or shapes, bad probabilities.
        CRFConfigError: bad grid or metric.
    """
    if metric not in METRICS:
        raise CRFConfigError(f"metric must be one of {METRICS}, got {metric!r}")
    base_params = base if isinstance(base, CRFParams) else CRFParams.from_dict(base, origin="base")
    n = len(images)
    if not (n == len(probabilities) == len(labels)) or n == 0:
        raise CRFInputError(
            f"tune_crf needs the same non-zero number of images ({n}), probability maps "
            f"({len(probabilities)}) and label maps ({len(labels)})"
        )
    names = list(names) if names is not None else [f"item {i}" for i in range(n)]
    settings = expand_grid(grid if grid is not None else DEFAULT_GRID, base_params)

    baseline_pred, truths, k_seen = [], [], set()
    for i in range(n):
        p = check_probabilities(probabilities[i], np.shape(images[i]), source=names[i])
        t = np.asarray(labels[i])
        if t.shape != p.shape[:2]:
            raise CRFInputError(f"{names[i]}: label map {t.shape} does not match the image {p.shape[:2]}")
        k_seen.add(p.shape[2])
        baseline_pred.append(p.argmax(axis=2))
        truths.append(t)
    if len(k_seen) != 1:
        raise CRFInputError(f"probability maps have different class counts {sorted(k_seen)}")
    k = int(num_classes or k_seen.pop())

    def score(preds: Sequence[np.ndarray]) -> dict[str, Any]:
        acc = ScoreAccumulator(k, ignore_index=ignore_index, band=band)
        for pr, tr in zip(preds, truths):
            acc.update(pr, tr)
        return acc.result()

    baseline = score(baseline_pred)
    tasks = []
    for s in settings:
        kwargs = base_params.replace(**s).kwargs()
        tasks += [(i, {**kwargs, "source": names[i]}) for i in range(n)]
    # One pool for the whole grid; results are grouped back per setting.
    all_labels = _run_grid(tasks, n, settings, n_jobs, images, probabilities, progress)
    results = []
    for j, s in enumerate(settings):
        results.append({"setting": dict(s), "scores": score(all_labels[j * n:(j + 1) * n])})

    values = [r["scores"][metric] for r in results]
    best = max(range(len(values)), key=lambda j: (-math.inf if math.isnan(values[j]) else values[j], -j))
    improved = not math.isnan(values[best]) and (math.isnan(baseline[metric]) or values[best] > baseline[metric])
    best_params = base_params.replace(**settings[best], enabled=bool(improved))
    return TuningResult(metric=metric, baseline=baseline, results=results, best_index=best,
                        best_params=best_params)


def _run_grid(tasks, n, settings, n_jobs, images, probabilities, progress) -> list[np.ndarray]:
    """Labels of every (setting, image) task, in task order, from one worker pool."""
    out: list[np.ndarray] = []
    try:
        stream = imap_tasks(_label_task, tasks, n_jobs=n_jobs, initializer=_init_worker,
                            initargs=(list(images), list(probabilities)))
        for labels in stream:
            out.append(labels)
            if progress is not None and len(out) % n == 0:
                j = len(out) // n
                progress(j, len(settings), settings[j - 1])
    finally:
        _STATE.clear()  # serial runs keep the images in this process otherwise
    return out
