"""``volumes2tfrecord``: CT/MRI volumes and their label volumes -> TFRecords (schema version 2).

Input: an images folder and a labels folder holding volumes under the same
names (``imagesTr/case_001.nii.gz`` pairs with ``labelsTr/case_001.nii.gz``;
any of NIfTI, NRRD, MHA/MHD, or DICOM series folders, see
:mod:`kerasseg.volume_io`). Each pair becomes one volume record keeping the
voxels' storage type, spacing, origin and direction
(:func:`kerasseg.schema.encode_volume_example`); with ``slices=AXIS`` each pair
becomes 2D slice records for the 2D models instead.

The guarantees are those of the 2D converters (:mod:`data_tools.converter`,
whose staging, split, shard and report code this module shares): the output
appears atomically or not at all, ``--overwrite`` replaces only a folder a
converter wrote, splits and folds are reproducible from the seed and written
to ``splits/``, the records are identical for any worker count, and a bad
pair stops the run naming the file (or, ``on_error="skip"``, is left out and
listed in the report).

``dataset.json`` of a volume dataset (``dimensions: 3``) adds, over the
training split, ``volume.spacing`` and ``volume.shape`` (median/min/max per
axis ``(z, y, x)``), ``volume.foreground_intensity`` (0.5 and 99.5 percentiles,
mean and std of the voxels inside any label, per channel: what CT clipping and
z-scoring use) and ``volume.dtypes``; ``class_pixel_counts`` count voxels.
"""

from __future__ import annotations

import glob
import json
import math
import os
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from data_tools import output
from data_tools.converter import (
    DEFAULT_SPLIT, _deterministic, _drop_empty_shards, _existing_dir, _in_staging, _intensity, _log, _Options,
    _plan_splits, _results, _save, _shard_count, _shard_of, _start_pool, _stop_pool, _write_split_lists,
)
from data_tools.errors import AnnotationError, ConversionError
from data_tools.report import ConversionReport, FileNote
from data_tools.splits import assign_folds
from data_tools.volume_work import AXIS_NAMES, IGNORE_INDEX, PairTask, convert_pair, measure_range

DEFAULT_MAX_VOXELS = 1 << 30
"""Voxels (times channels) above which a volume is refused from its header: 1 Gi, 4 GiB of float32."""

SLICE_AXES = {"z": 0, "y": 1, "x": 2}
"""``slices=`` axis names and the array axis of ``(D, H, W)`` they cut along."""

PERCENTILES = (0.5, 99.5)

FOREGROUND_SAMPLE_CAP = 20_000
"""Foreground voxels kept per volume and channel for the dataset percentiles (all of them when fewer)."""


def read_class_names(labels: str | os.PathLike | list[str] | tuple[str, ...] | None) -> list[str] | None:
    """Class names in id order from ``--labels``.

    Accepted: a list of names; a comma-separated string (``"background,anterior,posterior"``);
    a text file with one name a line (line order = id, blank lines and ``__ignore__`` skipped);
    or a JSON file with a ``"labels"`` object of ``id: name`` (the Medical Segmentation
    Decathlon's ``dataset.json``). ``None``: names are made from the ids found.

    Raises:
        ConversionError: unreadable file, duplicate names, fewer than 2 classes, ids
            that are not ``0..K-1`` or more than 255 classes.
    """
    if labels is None:
        return None
    source: str | None = None
    if isinstance(labels, (list, tuple)):
        names = [str(n).strip() for n in labels]
    else:
        text = os.fspath(labels)
        if os.path.isfile(text):
            source = text
            names = _names_from_file(text)
        elif text.endswith((".txt", ".json")) or os.sep in text:
            raise ConversionError(text, "--labels: no such file")
        else:
            names = [n.strip() for n in text.split(",")]
    names = [n for n in names if n and n != "__ignore__"]
    if len(names) < 2:
        raise ConversionError(source, f"--labels names {len(names)} class(es); give the background and at least "
                              "one class, in id order")
    if len(set(names)) != len(names):
        duplicate = next(n for n in names if names.count(n) > 1)
        raise ConversionError(source, f"--labels lists {duplicate!r} twice")
    if len(names) > IGNORE_INDEX:
        raise ConversionError(source, f"{len(names)} classes; at most {IGNORE_INDEX} fit in a uint8 label volume")
    return names


def _names_from_file(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ConversionError(path, f"cannot read the class list ({e})") from e
    if not path.lower().endswith(".json"):
        return [line.strip() for line in text.splitlines()]
    try:
        table = json.loads(text)["labels"]
        ids = {int(k): str(v) for k, v in table.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConversionError(path, f"expected a JSON object with \"labels\": {{\"0\": \"background\", ...}} ({e})") \
            from None
    if sorted(ids) != list(range(len(ids))):
        raise ConversionError(path, f"label ids must be 0..{len(ids) - 1} without gaps, got {sorted(ids)}")
    return [ids[i] for i in range(len(ids))]


def _pairs(images_dir: str, labels_dir: str, output_dir: str, fail: Callable[[AnnotationError], None],
           warnings: list[FileNote]) -> list[tuple[str, str, str]]:
    """``(case, image path, label path)`` of every image, paired with the label volume of the same case id."""
    from kerasseg.volume_io import find_volumes

    exclude = [output_dir] + ([labels_dir] if labels_dir != images_dir else [])
    images = find_volumes(images_dir, exclude=exclude)
    labels: dict[str, str] = {}
    ambiguous: dict[str, list[str]] = {}
    for case, path in find_volumes(labels_dir, exclude=[output_dir] + ([images_dir] if images_dir != labels_dir else [])):
        if case in labels:
            ambiguous.setdefault(case, [labels[case]]).append(path)
        labels[case] = path
    if not images:
        raise ConversionError(images_dir, "no volumes found (searched recursively for .nii, .nii.gz, .nrrd, .nhdr, "
                              ".mha, .mhd files and DICOM series folders)")
    seen: dict[str, str] = {}
    pairs = []
    for case, path in images:
        if case in seen:
            fail(AnnotationError(path, f"has the same case id {case!r} as {seen[case]} (one volume per name)"))
            continue
        seen[case] = path
        label = labels.pop(case, None)
        if case in ambiguous:
            fail(AnnotationError(path, f"has several label volumes of the same name: {', '.join(ambiguous[case])}; "
                                 "keep one"))
            continue
        if label is None:
            fail(AnnotationError(path, f"has no label volume: expected {case} (.nii.gz, .nii, .nrrd, .mha, .mhd or a "
                                 f"DICOM folder) in {labels_dir}"))
            continue
        pairs.append((case, path, label))
    for case, label in sorted(labels.items()):
        warnings.append(FileNote(label, "label volume without an image of the same name; not converted"))
    return pairs


def convert_volumes(
    images_dir: str | os.PathLike,
    labels_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    labels: str | os.PathLike | list[str] | tuple[str, ...] | None = None,
    split: str | Mapping[str, float] = DEFAULT_SPLIT,
    folds: int = 0,
    seed: int = 0,
    shards: int | None = None,
    workers: int = 1,
    on_error: str = "stop",
    overwrite: bool = False,
    preview: int = 0,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    max_voxels: int | None = None,
    split_file: str | os.PathLike | None = None,
    slices: str | None = None,
) -> ConversionReport:
    """Convert image volumes and their label volumes to TFRecords.

    Args:
        images_dir: image volumes (searched recursively).
        labels_dir: label volumes under the same case ids (may hold extra
            files: a label without an image is a warning).
        output_dir: the dataset folder to create.
        labels: class names in id order (see :func:`read_class_names`);
            default ``background, class_1, ...`` up to the highest id found.
        split, folds, seed, shards, workers, on_error, overwrite, progress, log,
            split_file: as in :func:`data_tools.converter.convert_labelme`; the
            source ids are the case ids (relative path without extension).
        preview: overlay PNGs of the middle slice of the first N volumes.
        max_voxels: refuse volumes of more voxels x channels, from the header
            (default :data:`DEFAULT_MAX_VOXELS`).
        slices: ``None`` (volume records) or ``"z"``/``"y"``/``"x"``: write 2D
            slice records cut along that axis instead (source id
            ``<case>/z0012``; a volume's slices stay in one split and fold).
            uint8 and uint16 voxels are kept; other types are mapped linearly
            from the training split's range to uint16.

    Returns:
        The :class:`~data_tools.report.ConversionReport` (also in ``report.json``).

    Raises:
        ConversionError: bad arguments, no volumes, or the output cannot be written.
        AnnotationError: a bad pair with ``on_error="stop"``, naming the file.
    """
    started = time.perf_counter()
    limit = DEFAULT_MAX_VOXELS if max_voxels is None else max_voxels
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConversionError(None, f"--max-voxels must be a positive number of voxels, got {max_voxels!r}")
    if slices is not None and slices not in SLICE_AXES:
        raise ConversionError(None, f"--slices must be one of {', '.join(SLICE_AXES)} (array axes of (z, y, x)), "
                              f"got {slices!r}")
    options = _Options.make(split, folds, seed, shards, workers, on_error, preview, limit, overwrite, split_file)
    images_dir = _existing_dir(images_dir, "IMAGES_DIR")
    labels_dir = _existing_dir(labels_dir, "LABELS_DIR")
    output_dir = output.check_output(output_dir, overwrite, inputs=[images_dir, labels_dir])
    class_names = read_class_names(labels)
    skipped: list[FileNote] = []
    warnings: list[FileNote] = []

    def fail(error: AnnotationError) -> None:
        if options.on_error == "stop":
            raise error
        skipped.append(FileNote(error.path or "", error.problem))

    pairs = _pairs(images_dir, labels_dir, output_dir, fail, warnings)
    if not pairs:
        raise ConversionError(images_dir, f"no volume could be converted ({len(skipped)} skipped)")
    by_case = {case: (image, label) for case, image, label in pairs}
    plan = _plan_splits(list(by_case), options, skipped)
    axis = None if slices is None else SLICE_AXES[slices]
    tasks = [
        PairTask(position=i, case=case, split=split_name, image=by_case[case][0], label=by_case[case][1],
                 filename=os.path.relpath(by_case[case][0], images_dir).replace(os.sep, "/"),
                 max_voxels=limit, num_classes=None if class_names is None else len(class_names),
                 preview=i < options.preview, axis=axis, sample_cap=FOREGROUND_SAMPLE_CAP)
        for i, (split_name, case) in enumerate((s, c) for s, cases in plan.items() for c in cases)
    ]
    pool = _start_pool(options.workers, len(tasks))
    try:
        if axis is not None:
            tasks = _with_slice_mapping(tasks, pool, options, skipped)

        def build(tmp: str) -> ConversionReport:
            state = _write(tmp, tasks, plan, options, progress, skipped, warnings, pool)
            return _finish(tmp, state, plan, class_names, options, images_dir, labels_dir, output_dir, skipped,
                           warnings, started, slices)

        report = _in_staging(output_dir, options.overwrite, build)
    finally:
        _stop_pool(pool)
    _log(log, report.to_text())
    return report


def _with_slice_mapping(tasks: list[PairTask], pool, options: _Options, skipped: list[FileNote]) -> list[PairTask]:
    """Tasks carrying one intensity mapping to uint16 for non-uint8/uint16 voxels (the train split's range)."""
    import dataclasses

    from kerasseg.volume_io import read_volume_info

    dtypes = {read_volume_info(t.image, max_voxels=t.max_voxels).dtype for t in tasks}
    if dtypes <= {"uint8", "uint16"}:
        if len(dtypes) > 1:
            raise ConversionError(tasks[0].image, "uint8 and uint16 volumes mixed: 2D slices need one bit depth")
        return tasks
    reference = [t for t in tasks if t.split == "train"] or tasks
    low, high = math.inf, -math.inf
    for result in _results(reference, pool, False, worker=measure_range):
        if not result["ok"]:
            if options.on_error == "stop":
                raise AnnotationError(result["path"], result["problem"])
            continue  # reported when the pair itself is converted
        low, high = min(low, result["min"]), max(high, result["max"])
    if not math.isfinite(low):
        return tasks
    scale = 65535.0 / (high - low) if high > low else 1.0
    return [dataclasses.replace(t, mapping=(float(low), float(scale))) for t in tasks]


class _VolumeState:
    """What the records of one conversion add up to."""

    def __init__(self, plan: Mapping[str, Sequence[str]]) -> None:
        self.written: dict[str, list[str]] = {split: [] for split in plan}
        self.cases: dict[str, list[str]] = {split: [] for split in plan}
        self.class_voxels = {split: np.zeros(256, np.int64) for split in plan}
        self.class_examples = {split: np.zeros(256, np.int64) for split in plan}
        self.per_case: list[dict] = []  # one summary per converted volume (statistics of its split)
        self.previews: list[str] = []
        self.tf_import_seconds = 0.0


def _write(tmp: str, tasks: list[PairTask], plan: Mapping[str, Sequence[str]], options: _Options, progress: bool,
           skipped: list[FileNote], warnings: list[FileNote], pool) -> _VolumeState:
    """Write every pair's record(s) in task order into shards of its split."""
    results = _results(tasks, pool, progress, worker=convert_pair, unit="volume")
    import_started = time.perf_counter()
    from kerasseg import schema
    from kerasseg.tf_logging import import_tensorflow

    tf = import_tensorflow()
    state = _VolumeState(plan)
    state.tf_import_seconds = time.perf_counter() - import_started
    num_shards = {split: _shard_count(len(cases), options.shards) for split, cases in plan.items()}
    rank = {(split, case): i for split, cases in plan.items() for i, case in enumerate(cases)}
    writer, writer_key = None, None
    try:
        for result in results:
            task = tasks[result["position"]]
            if not result["ok"]:
                if options.on_error == "stop":
                    raise AnnotationError(result["path"], result["problem"])
                skipped.append(FileNote(result["path"], result["problem"]))
                continue
            key = (task.split, _shard_of(rank[(task.split, task.case)], len(plan[task.split]), num_shards[task.split]))
            if writer is None or key != writer_key:
                if writer is not None:
                    writer.close()
                writer_key = key
                writer = tf.io.TFRecordWriter(os.path.join(tmp, schema.shard_filename(
                    task.split, key[1], num_shards[task.split])))
            for serialized, source_id, present in _records(schema, task, result):
                writer.write(_deterministic(tf, serialized))
                state.written[task.split].append(source_id)
                state.class_examples[task.split] += present
            state.cases[task.split].append(task.case)
            state.class_voxels[task.split] += result["class_voxels"]
            state.per_case.append({key: result.get(key) for key in (
                "dtype", "channels", "shape", "spacing", "stats", "fg_stats", "fg_sample", "pixel_dtype")}
                | {"split": task.split, "path": task.image})
            warnings.extend(FileNote(result["path"], note) for note in result["notes"])
            if result["preview_png"] is not None:
                name = "preview/" + task.case.replace("/", "__") + ".png"
                os.makedirs(os.path.join(tmp, "preview"), exist_ok=True)
                with open(os.path.join(tmp, name), "wb") as f:
                    f.write(result["preview_png"])
                state.previews.append(name)
            # the arrays are not needed again: drop them before the next volume arrives
            result.pop("voxels", None)
            result.pop("slices", None)
    finally:
        if writer is not None:
            writer.close()
    _drop_empty_shards(tmp, num_shards, schema)
    return state


def _records(schema, task: PairTask, result: dict):
    """``(serialized record, source id, classes present (256,) bool)`` of one converted pair."""
    if task.axis is None:
        present = result["class_voxels"] > 0
        yield schema.encode_volume_example(
            voxels=result["voxels"], mask=result["mask"], spacing=result["spacing"], origin=result["origin"],
            direction=result["direction"], filename=task.filename, source_id=task.case,
        ), task.case, present
        return
    channels = int(result["channels"])
    for item in result["slices"]:
        yield schema.encode_example(
            image_bytes=item["image_png"], image_format="png", height=item["height"], width=item["width"],
            channels=channels, mask_png=item["mask_png"], filename=task.filename, source_id=item["source_id"],
        ), item["source_id"], item["present"]


def _finish(tmp: str, state: _VolumeState, plan: Mapping[str, Sequence[str]], class_names: list[str] | None,
            options: _Options, images_dir: str, labels_dir: str, output_dir: str, skipped: list[FileNote],
            warnings: list[FileNote], started: float, slices: str | None) -> ConversionReport:
    from kerasseg import schema

    if not state.per_case:
        raise ConversionError(images_dir, f"no volume could be converted ({len(skipped)} skipped; see the reasons "
                              "above)")
    channels = sorted({int(c["channels"]) for c in state.per_case})
    if len(channels) > 1:
        odd = next(c["path"] for c in state.per_case if int(c["channels"]) != channels[0])
        raise ConversionError(odd, f"volumes with {' and '.join(map(str, channels))} channels mixed in one dataset; "
                              "convert them separately")
    max_id = max((int(np.nonzero(c[:IGNORE_INDEX])[0].max()) for c in state.class_voxels.values()
                  if c[:IGNORE_INDEX].any()), default=0)
    if class_names is None:
        class_names = ["background"] + [f"class_{i}" for i in range(1, max(2, max_id + 1))]
    n_classes = len(class_names)
    stats_split = "train" if state.cases.get("train") else next(s for s, ids in state.cases.items() if ids)
    measured = [c for c in state.per_case if c["split"] == stats_split]
    fold_lists = _fold_lists(state, options) if options.folds else []
    _write_split_lists(tmp, state.written, fold_lists)

    split_counts = {split: len(ids) for split, ids in state.written.items()}
    shard_counts = {split: len(glob.glob(os.path.join(tmp, schema.shard_glob(split)))) for split in plan}
    source: dict[str, Any] = {"converter": "volumes2tfrecord", "images_dir": images_dir, "labels_dir": labels_dir,
                              "split": options.fractions, "seed": options.seed, "skipped": len(skipped),
                              "volumes": {split: len(cases) for split, cases in state.cases.items()}}
    if options.split_file is not None:
        source["split_file"] = os.path.abspath(options.split_file)
    counts = {s: [int(v) for v in c[:n_classes]] for s, c in state.class_voxels.items()}
    if slices is None:
        dtypes = sorted({c["dtype"] for c in measured})
        info = schema.DatasetInfo(
            class_names=list(class_names), splits=split_counts, shards=shard_counts, class_pixel_counts=counts,
            intensity=_intensity([c["stats"] for c in measured], channels[0], dtypes[0] if len(dtypes) == 1
                                 else "mixed") | {"split": stats_split},
            channels=channels[0], image_dtype=dtypes[0] if len(dtypes) == 1 else "mixed", ignore_index=IGNORE_INDEX,
            num_folds=options.folds, source=source, dimensions=3,
            volume=volume_statistics(measured, channels[0]) | {"split": stats_split},
        )
    else:
        pixel_dtype = sorted({c["pixel_dtype"] for c in state.per_case})[-1]
        mapped = any(c["dtype"] not in ("uint8", "uint16") for c in state.per_case)
        source["slices"] = {"axis": slices, "mapping": "linear from the train split's range to uint16" if mapped
                            else None}
        info = schema.DatasetInfo(
            class_names=list(class_names), splits=split_counts, shards=shard_counts, class_pixel_counts=counts,
            intensity=_intensity([c["stats"] for c in measured], channels[0], pixel_dtype) | {"split": stats_split},
            channels=channels[0], image_dtype=pixel_dtype, ignore_index=IGNORE_INDEX, num_folds=options.folds,
            source=source,
        )
    if max_id >= n_classes:
        raise ConversionError(None, f"label volumes contain class id {max_id} but only {n_classes} classes are named")
    report = ConversionReport(
        output_dir=output_dir, converter="volumes" if slices is None else f"volume slices ({slices})",
        class_names=list(class_names), split_counts=split_counts, class_pixel_counts=counts,
        class_image_counts={s: [int(v) for v in c[:n_classes]] for s, c in state.class_examples.items()},
        ignore_pixels={s: int(c[IGNORE_INDEX]) for s, c in state.class_voxels.items()}, shards=shard_counts,
        num_folds=options.folds, skipped=list(skipped), warnings=list(warnings),
        previews=state.previews, workers=options.workers, seconds=time.perf_counter() - started,
        tensorflow_import_seconds=state.tf_import_seconds,
    )
    _save(tmp, report, info)
    return report


def _fold_lists(state: _VolumeState, options: _Options) -> list[dict[str, list[str]]]:
    """K folds of the train split's volumes; in slice mode each volume's slices stay in one fold."""
    folds = assign_folds(state.cases["train"], options.folds, seed=options.seed)
    if state.written["train"] == state.cases["train"]:
        return folds
    by_case: dict[str, list[str]] = {}
    for source_id in state.written["train"]:
        by_case.setdefault(source_id.rsplit("/", 1)[0], []).append(source_id)
    return [{part: [s for case in fold[part] for s in by_case.get(case, [])] for part in ("train", "val")}
            for fold in folds]


def _axis_stats(values: Sequence[Sequence[float]]) -> dict[str, list[float]]:
    array = np.asarray(values, np.float64)
    return {"median": [float(v) for v in np.median(array, axis=0)], "min": [float(v) for v in array.min(axis=0)],
            "max": [float(v) for v in array.max(axis=0)]}


def weighted_percentile(samples: Sequence[tuple[np.ndarray, float]], q: float) -> float:
    """The ``q``-th percentile (0..100) of the union of weighted sorted samples (exact for unit weights).

    Uses the lower-nearest-rank rule on cumulative weight, so the result is
    always one of the sample values.
    """
    values = np.concatenate([s for s, _ in samples]) if samples else np.zeros(0)
    if values.size == 0:
        return 0.0
    weights = np.concatenate([np.full(s.size, w, np.float64) for s, w in samples])
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order])
    target = q / 100.0 * cumulative[-1]
    index = min(int(np.searchsorted(cumulative, target, side="left")), values.size - 1)
    return float(values[order][index])


def volume_statistics(cases: Sequence[Mapping[str, Any]], channels: int) -> dict[str, Any]:
    """``dataset.json`` ``volume`` statistics of the converted volumes of one split.

    ``spacing``/``shape``: median, min and max per axis ``(z, y, x)``;
    ``foreground_intensity``: per channel, the 0.5 and 99.5 percentiles, mean
    and std of the voxels inside any label (``voxels`` counts them);
    ``dtypes``: volumes per storage type.
    """
    fg = _intensity([c["fg_stats"] for c in cases], channels, "float64")
    foreground: dict[str, Any] = {}
    if fg["pixels"] and any(c["fg_stats"]["count"] for c in cases):
        per_channel = [[c["fg_sample"][k] for c in cases] for k in range(channels)]
        foreground = {
            "p00_5": [weighted_percentile(samples, PERCENTILES[0]) for samples in per_channel],
            "p99_5": [weighted_percentile(samples, PERCENTILES[1]) for samples in per_channel],
            "mean": fg["mean"], "std": fg["std"], "voxels": fg["pixels"],
        }
    dtypes: dict[str, int] = {}
    for c in cases:
        dtypes[c["dtype"]] = dtypes.get(c["dtype"], 0) + 1
    return {"spacing": _axis_stats([c["spacing"] for c in cases]), "shape": _axis_stats([c["shape"] for c in cases]),
            "foreground_intensity": foreground, "dtypes": dict(sorted(dtypes.items())), "volumes": len(cases)}


__all__ = ["AXIS_NAMES", "DEFAULT_MAX_VOXELS", "SLICE_AXES", "convert_volumes", "read_class_names",
           "volume_statistics", "weighted_percentile"]
