"""Convert labelme folders and image+mask folders into kerasseg TFRecords.

Both converters share one pipeline:

1. find the sources and check them cheaply (JSON, labels, image paths that
   must stay inside the input folder, UTF-8 names, duplicates, image sizes
   from the headers against the pixel limit) before anything is written
   (labelme: each file's own checks run in the ``workers`` processes);
2. assign reproducible splits (and k-fold lists) from the sorted ids and seed;
3. decode images and rasterize masks, and serialize and frame each record, in
   ``workers`` processes; results come back in a fixed order, so the records
   are byte-identical for any worker count. TensorFlow is never imported: the
   records are written by :mod:`kerasseg.tfrecord_file` (the bytes TensorFlow
   writes), which saves its import (seconds of CPU) on every run;
4. write shards, ``splits/*.txt``, previews and the report into a staging
   folder beside ``OUTPUT_DIR``, ``dataset.json`` and the manifest of what was
   written last, then rename it into place (:mod:`data_tools.output`). An
   interrupted run leaves no ``OUTPUT_DIR`` (and so no ``dataset.json``); an
   existing output is only replaced with ``overwrite``, and only when it holds
   nothing but what an earlier conversion wrote. Staging folders of killed
   runs are removed by the next run to the same ``OUTPUT_DIR`` once stale.

A failure to write (disk full, quota, permissions) stops the run with a
:class:`~data_tools.errors.ConversionError` naming the file and the cause;
the staging folder is removed and an earlier output is left untouched.
"""

from __future__ import annotations

import dataclasses
import errno
import glob
import math
import multiprocessing
import os
import shutil
import sys
import time
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from data_tools import output
from data_tools.errors import AnnotationError, ConversionError
from data_tools.labels import IGNORE_INDEX, classes_from_labels, read_labels_txt
from data_tools.paths import check_inside, check_utf8_name, is_utf8, printable
from data_tools.report import ConversionReport, FileNote
from data_tools.splits import (
    DEFAULT_SPLIT,
    apply_split_file,
    assign_folds,
    assign_splits,
    parse_split_spec,
    read_split_file,
)

ON_ERROR_CHOICES = ("stop", "skip")
RECORDS_PER_SHARD = 500
"""Default shard size when ``shards`` is not given."""


@dataclasses.dataclass(frozen=True)
class _Task:
    """One example to convert (picklable; runs in a worker)."""

    position: int
    source_id: str
    split: str
    kind: str  # "labelme" or "masks"
    payload: tuple
    preview: bool


# -- public API --------------------------------------------------------------------------------


def convert_labelme(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    labels: str | os.PathLike | None = None,
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
    max_pixels: int | None = None,
    split_file: str | os.PathLike | None = None,
    append: bool = False,
) -> ConversionReport:
    """Convert a folder of labelme JSON files (searched recursively) to TFRecords.

    Args:
        input_dir: folder with ``*.json`` annotations and their images.
        output_dir: dataset folder to create (see ``kerasseg.schema``).
        labels: labelme ``labels.txt``; default ``input_dir/labels.txt`` when it
            exists, else the classes found in the data (sorted, background first).
        split: ``"train=0.8,val=0.2"`` or a mapping of split name to fraction.
        folds: write ``k``-fold lists of the train split (0 = none).
        seed: seed of the split/fold shuffle.
        shards: shards per split (default: one per 500 examples).
        workers: processes decoding and rasterizing (1 = in this process).
        on_error: ``"stop"`` (raise, write nothing) or ``"skip"`` (leave the
            file out and list it in the report).
        overwrite: replace an existing converted dataset at ``output_dir``
            (refused when it holds anything a conversion did not write).
        preview: write this many overlay PNGs to ``output_dir/preview``.
        progress: show a tqdm progress bar on stderr.
        log: called with progress messages (default: silent).
        max_pixels: largest ``height * width`` accepted for an image or mask,
            checked from file headers before decoding (default
            :func:`kerasseg.image_limits.max_pixels`: ``KERASSEG_MAX_PIXELS``
            or 128 megapixels).
        split_file: explicit assignment instead of ``split`` fractions: a file of
            ``SOURCE_ID SPLIT`` lines (:func:`data_tools.splits.read_split_file`);
            every converted file must be listed, and every listed id must exist.
        append: add the converted files as new splits of the existing dataset at
            ``output_dir`` (e.g. ``split="test"``) instead of creating it; classes,
            storage type and channels must agree (:mod:`data_tools.append`).

    Returns:
        The :class:`~data_tools.report.ConversionReport` (also saved as
        ``report.json``/``report.txt`` in ``output_dir``).

    Raises:
        AnnotationError: a bad source file with ``on_error="stop"``.
        ConversionError: bad options, empty input, or an existing output.
    """
    if append:
        target = _append_target(output_dir, overwrite, [os.path.abspath(os.fspath(input_dir))])
        return _append(target, lambda out: convert_labelme(
            input_dir, out, labels=labels, split=split, folds=folds, seed=seed, shards=shards, workers=workers,
            on_error=on_error, preview=preview, progress=progress, log=log, max_pixels=max_pixels,
            split_file=split_file))
    started = time.perf_counter()
    options = _Options.make(split, folds, seed, shards, workers, on_error, preview, max_pixels, overwrite,
                            split_file)
    input_dir = _existing_dir(input_dir, "INPUT_DIR")
    output_dir = output.check_output(output_dir, overwrite, inputs=[input_dir])
    json_files = _find_files(input_dir, (".json",), exclude=[output_dir])
    if not json_files:
        raise ConversionError(input_dir, "no labelme *.json files found (searched recursively)")
    pool = _start_pool(options.workers, len(json_files))
    try:
        if labels is None and os.path.isfile(os.path.join(input_dir, "labels.txt")):
            labels = os.path.join(input_dir, "labels.txt")
        class_list = read_labels_txt(labels) if labels is not None else None

        skipped: list[FileNote] = []
        fail = _failure_handler(options.on_error, skipped)
        annotations: dict[str, tuple[str, set[str]]] = {}
        seen_ids: dict[str, str] = {}
        seen_images: dict[str, str] = {}
        jobs = [(json_path, input_dir, options.max_pixels, class_list) for json_path in json_files]
        for json_path, checked in zip(json_files, _map(_check_labelme_file, jobs, pool)):
            source_id = os.path.splitext(os.path.relpath(json_path, input_dir))[0].replace(os.sep, "/")
            image_file, found_labels, error, label_error = checked
            try:
                if error is not None:
                    raise error
                if source_id.lower() in seen_ids:
                    raise AnnotationError(
                        json_path, f"duplicate id {source_id!r}: {seen_ids[source_id.lower()]} has the same name"
                    )
                if image_file is not None and image_file in seen_images:
                    raise AnnotationError(
                        json_path,
                        f"duplicate: annotates the same image {image_file} as {seen_images[image_file]}",
                    )
                if label_error is not None:
                    raise label_error
            except AnnotationError as e:
                fail(e)
                continue
            seen_ids[source_id.lower()] = json_path
            if image_file is not None:
                seen_images[image_file] = json_path
            annotations[source_id] = (json_path, set(found_labels))
        if class_list is None:
            class_list = classes_from_labels(label for _, found in annotations.values() for label in found)
        _log(log, f"found {len(json_files)} annotation(s), {len(class_list)} classes ({class_list.source})")

        class_ids = class_list.ids()

        def make_payload(source_id: str) -> tuple:
            return (annotations[source_id][0], input_dir, class_ids, options.max_pixels)

        return _convert(
            kind="labelme",
            ids=list(annotations),
            make_payload=make_payload,
            class_names=list(class_list.names),
            options=options,
            input_description={"input_dir": input_dir, "labels": class_list.source},
            output_dir=output_dir,
            skipped=skipped,
            started=started,
            progress=progress,
            log=log,
            pool=pool,
        )
    finally:
        _stop_pool(pool)


def convert_mask_folder(
    images_dir: str | os.PathLike,
    masks_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    mask_pattern: str | None = None,
    threshold: float | None = None,
    class_map: str | os.PathLike | None = None,
    image_pattern: str | None = None,
    roi_pattern: str | None = None,
    roi_dir: str | os.PathLike | None = None,
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
    max_pixels: int | None = None,
    split_file: str | os.PathLike | None = None,
    append: bool = False,
) -> ConversionReport:
    """Convert a folder of images and a folder of mask files to TFRecords.

    Args:
        images_dir: images (PNG, JPEG, TIFF, BMP, GIF), searched recursively.
        masks_dir: mask files, same sub-folders as the images (may be ``images_dir``).
        mask_pattern: file pattern of an image's masks, ``{stem}`` = image name
            without extension (default ``"{stem}.*"``), or ``{id}`` with
            ``image_pattern``; several matches are combined.
        threshold: grey masks become binary: value > threshold -> class 1.
        class_map: file mapping mask values/colours to classes (see
            :class:`data_tools.masks.ClassMap`); default: values are class ids
            (0/255 binary masks -> 0/1).
        image_pattern: which files are images, holding ``{id}`` once
            (``"{id}_training.tif"``); the id pairs the image with masks and ROI
            named differently, and becomes the source id.
        roi_pattern: an image's region-of-interest (field-of-view) file
            (``{stem}`` or ``{id}``), in ``roi_dir`` (default ``masks_dir``):
            labels outside it become ignore (255), so training and evaluation
            count only ROI pixels; the ROI is stored in the record too
            (``image/roi/encoded``).
        split, folds, seed, shards, workers, on_error, overwrite, preview,
        progress, log, max_pixels, split_file, append: as in :func:`convert_labelme`.

    Returns:
        The :class:`~data_tools.report.ConversionReport`.
    """
    from data_tools.masks import DEFAULT_MASK_PATTERN, find_pairs, read_class_map

    if append:
        inputs = [os.path.abspath(os.fspath(p)) for p in (images_dir, masks_dir, roi_dir) if p is not None]
        target = _append_target(output_dir, overwrite, inputs)
        return _append(target, lambda out: convert_mask_folder(
            images_dir, masks_dir, out, mask_pattern=mask_pattern, threshold=threshold, class_map=class_map,
            image_pattern=image_pattern, roi_pattern=roi_pattern, roi_dir=roi_dir, split=split, folds=folds,
            seed=seed, shards=shards, workers=workers, on_error=on_error, preview=preview, progress=progress,
            log=log, max_pixels=max_pixels, split_file=split_file))
    started = time.perf_counter()
    options = _Options.make(split, folds, seed, shards, workers, on_error, preview, max_pixels, overwrite,
                            split_file)
    images_dir = _existing_dir(images_dir, "IMAGES_DIR")
    masks_dir = _existing_dir(masks_dir, "MASKS_DIR")
    roi_dir = _existing_dir(roi_dir, "--roi-dir") if roi_dir is not None else None
    output_dir = output.check_output(output_dir, overwrite,
                                     inputs=[images_dir, masks_dir] + ([roi_dir] if roi_dir else []))
    if threshold is not None and not math.isfinite(float(threshold)):
        raise ConversionError(None, f"--threshold must be a finite number, got {threshold}")
    cmap = read_class_map(class_map) if class_map is not None else None
    pattern = mask_pattern or DEFAULT_MASK_PATTERN
    pairs, problems = find_pairs(images_dir, masks_dir, mask_pattern=pattern, exclude=[output_dir],
                                 image_pattern=image_pattern, roi_pattern=roi_pattern, roi_dir=roi_dir)
    if not pairs and not problems:
        raise ConversionError(images_dir, "no images found (searched recursively for PNG/JPEG/TIFF/BMP/GIF)")
    description = {
        "images_dir": images_dir,
        "masks_dir": masks_dir,
        "mask_pattern": pattern,
        "image_pattern": image_pattern,
        "roi_pattern": roi_pattern,
        "roi_dir": roi_dir or (masks_dir if roi_pattern else None),
        "threshold": threshold,
        "class_map": cmap.source if cmap is not None else None,
    }
    return _convert_pairs(pairs, problems, images_root=images_dir, description=description, threshold=threshold,
                          cmap=cmap, options=options, output_dir=output_dir, started=started, progress=progress,
                          log=log)


def convert_mask_list(
    pairs_file: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    threshold: float | None = None,
    class_map: str | os.PathLike | None = None,
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
    max_pixels: int | None = None,
    split_file: str | os.PathLike | None = None,
    append: bool = False,
) -> ConversionReport:
    """Convert the image/mask(/ROI) pairs listed in a CSV or TSV file to TFRecords.

    ``pairs_file`` has one ``image,mask[,roi]`` row per example (see
    :func:`data_tools.pairs_file.read_pairs_file`); the other arguments are
    those of :func:`convert_mask_folder`. Source ids are the image paths
    relative to the list's folder, without extension.
    """
    from data_tools.masks import read_class_map
    from data_tools.pairs_file import read_pairs_file

    if append:
        target = _append_target(output_dir, overwrite, [os.path.dirname(os.path.abspath(os.fspath(pairs_file)))])
        return _append(target, lambda out: convert_mask_list(
            pairs_file, out, threshold=threshold, class_map=class_map, split=split, folds=folds, seed=seed,
            shards=shards, workers=workers, on_error=on_error, preview=preview, progress=progress, log=log,
            max_pixels=max_pixels, split_file=split_file))
    started = time.perf_counter()
    options = _Options.make(split, folds, seed, shards, workers, on_error, preview, max_pixels, overwrite,
                            split_file)
    pairs_file = os.path.abspath(os.fspath(pairs_file))
    pairs, problems, folders = read_pairs_file(pairs_file)
    output_dir = output.check_output(output_dir, overwrite, inputs=[pairs_file, *folders])
    if threshold is not None and not math.isfinite(float(threshold)):
        raise ConversionError(None, f"--threshold must be a finite number, got {threshold}")
    cmap = read_class_map(class_map) if class_map is not None else None
    description = {"pairs_file": pairs_file, "threshold": threshold,
                   "class_map": cmap.source if cmap is not None else None}
    return _convert_pairs(pairs, problems, images_root=os.path.dirname(pairs_file), description=description,
                          threshold=threshold, cmap=cmap, options=options, output_dir=output_dir, started=started,
                          progress=progress, log=log)


def _convert_pairs(pairs: list, problems: list, *, images_root: str, description: dict[str, Any], threshold,
                   cmap, options: "_Options", output_dir: str, started: float, progress: bool,
                   log: Callable[[str], None] | None) -> ConversionReport:
    """Check sizes, then convert ``pairs`` (``MaskPair``); ``problems`` are reported as bad files."""
    from data_tools.images import check_file_pixels

    pool = _start_pool(options.workers, len(pairs))
    try:
        skipped: list[FileNote] = []
        fail = _failure_handler(options.on_error, skipped)
        for problem in problems:
            fail(problem)
        sized = []
        for pair in pairs:
            try:
                for path in (pair.image, *pair.masks, *([pair.roi] if pair.roi else [])):
                    check_file_pixels(path, max_pixels=options.max_pixels)
            except AnnotationError as e:
                fail(e)
                continue
            sized.append(pair)
        by_id = {pair.source_id: pair for pair in sized}
        _log(log, f"found {len(pairs)} image(s) with masks")

        def make_payload(source_id: str) -> tuple:
            pair = by_id[source_id]
            return (pair.image, pair.masks, images_root, threshold, cmap, options.max_pixels, pair.roi)

        return _convert(
            kind="masks",
            ids=list(by_id),
            make_payload=make_payload,
            class_names=list(cmap.names) if cmap is not None else None,
            options=options,
            input_description=description,
            output_dir=output_dir,
            skipped=skipped,
            started=started,
            progress=progress,
            log=log,
            pool=pool,
        )
    finally:
        _stop_pool(pool)


# -- options and checks ------------------------------------------------------------------------


def _append_target(output_dir, overwrite: bool, inputs: list[str]) -> str:
    from data_tools.append import check_target

    if overwrite:
        raise ConversionError(None, "--append adds splits to OUTPUT_DIR and --overwrite replaces it: choose one")
    return check_target(output_dir, inputs=inputs)


def _append(target: str, convert: Callable[[str], ConversionReport]) -> ConversionReport:
    from data_tools.append import append_splits

    return append_splits(target, convert)


@dataclasses.dataclass(frozen=True)
class _Options:
    fractions: dict[str, float]
    folds: int
    seed: int
    shards: int | None
    workers: int
    on_error: str
    preview: int
    max_pixels: int
    overwrite: bool = False
    split_file: str | None = None
    assignment: dict[str, str] | None = None

    @classmethod
    def make(cls, split, folds, seed, shards, workers, on_error, preview, max_pixels=None,
             overwrite=False, split_file=None) -> "_Options":
        from kerasseg.image_limits import PixelLimitError
        from kerasseg.image_limits import max_pixels as default_limit

        if on_error not in ON_ERROR_CHOICES:
            raise ConversionError(None, f"--on-error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
        if int(workers) < 1:
            raise ConversionError(None, f"--workers must be at least 1, got {workers}")
        if shards is not None and int(shards) < 1:
            raise ConversionError(None, f"--shards must be at least 1, got {shards}")
        if int(preview) < 0:
            raise ConversionError(None, f"--preview must be >= 0, got {preview}")
        if int(folds) < 0 or int(folds) == 1:
            raise ConversionError(None, f"--folds must be 0 (none) or at least 2, got {folds}")
        assignment = None
        if split_file is not None:
            split_file = os.fspath(split_file)
            assignment = read_split_file(split_file)
            names = list(dict.fromkeys(assignment.values()))
            fractions = {name: sum(v == name for v in assignment.values()) / len(assignment) for name in names}
        else:
            fractions = parse_split_spec(split)
        if folds and "train" not in fractions:
            raise ConversionError(split_file, "--folds needs a split named 'train'")
        if max_pixels is None:
            try:
                max_pixels = default_limit()
            except PixelLimitError as e:
                raise ConversionError(None, str(e)) from None
        elif isinstance(max_pixels, bool) or int(max_pixels) < 1:
            raise ConversionError(None, f"--max-pixels must be a positive number of pixels, got {max_pixels}")
        return cls(fractions, int(folds), int(seed), None if shards is None else int(shards),
                   int(workers), on_error, int(preview), int(max_pixels), bool(overwrite), split_file, assignment)


def _existing_dir(path: str | os.PathLike, what: str) -> str:
    path = os.path.abspath(os.fspath(path))
    if not is_utf8(path):
        raise ConversionError(printable(path), f"{what} is not a valid UTF-8 path; rename the folder to UTF-8")
    if not os.path.isdir(path):
        raise ConversionError(path, f"{what} is not an existing folder")
    return path


def _find_files(root: str, extensions: tuple[str, ...], *, exclude: Sequence[str]) -> list[str]:
    excluded = {os.path.abspath(p) for p in exclude}
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(
            d for d in dirs
            if not d.startswith(".") and os.path.join(folder, d) not in excluded
        )
        for name in sorted(files):
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in extensions:
                found.append(os.path.join(folder, name))
    return sorted(found, key=lambda p: os.path.relpath(p, root).replace(os.sep, "/"))


def _failure_handler(on_error: str, skipped: list[FileNote]) -> Callable[[AnnotationError], None]:
    def fail(error: AnnotationError) -> None:
        if on_error == "stop":
            raise error
        skipped.append(FileNote(error.path or "", error.problem))

    return fail


def _check_labelme_file(job: tuple) -> tuple:
    """The checks of one labelme JSON that need no other file (runs in the workers).

    ``job`` is ``(json_path, input_dir, max_pixels, class_list or None)``.
    Returns ``(image_file or None, labels, error, label_error)``: ``error`` is
    the first problem of the file itself (name, JSON, image path, pixel limit),
    ``label_error`` a label missing from ``class_list``, which the caller
    reports only after its duplicate checks (the order of the checks decides
    which problem a file is reported with).
    """
    from data_tools.images import check_file_pixels, check_header_pixels
    from data_tools.labelme import load_labelme_json, resolve_image_path

    json_path, input_dir, max_pixels, class_list = job
    try:
        check_utf8_name(json_path, input_dir)
        check_inside(json_path, input_dir, what="annotation")
        annotation = load_labelme_json(json_path, max_pixels=max_pixels)
        image_file = resolve_image_path(annotation, input_dir=input_dir)
        if image_file is not None and not os.path.isfile(image_file):
            raise AnnotationError(
                json_path, f"image file not found: {annotation.image_path!r} (looked for {image_file})"
            )
        if image_file is not None:
            check_file_pixels(image_file, max_pixels=max_pixels)
        elif annotation.image_data is not None:
            check_header_pixels(annotation.image_data, path=json_path, max_pixels=max_pixels, what="imageData")
    except AnnotationError as e:
        return None, [], e, None
    label_error = None
    if class_list is not None:
        known = class_list.ids()
        for shape in annotation.shapes:
            if shape.label not in known:
                label_error = AnnotationError(
                    json_path,
                    f"{shape.describe()}: label {shape.label!r} is not in {class_list.source} "
                    f"(known: {', '.join(class_list.names)})",
                )
                break
    return image_file, annotation.labels, None, label_error


def _map(function: Callable[[Any], Any], jobs: list, pool) -> Iterator[Any]:
    """``function`` over ``jobs`` in order, in the pool's workers when there is one."""
    if pool is None:
        return map(function, jobs)
    return pool.imap(function, jobs, chunksize=_chunksize(len(jobs), pool))


def _chunksize(num_jobs: int, pool) -> int:
    """Jobs per hand-out: about 8 hand-outs per worker, at most 8 jobs each."""
    return max(1, min(8, num_jobs // (pool._processes * 8)))


def _log(log: Callable[[str], None] | None, message: str) -> None:
    if log is not None:
        log(message)


# -- the shared pipeline -----------------------------------------------------------------------


def _convert(
    *,
    kind: str,
    ids: list[str],
    make_payload: Callable[[str], tuple],
    class_names: list[str] | None,
    options: _Options,
    input_description: dict[str, Any],
    output_dir: str,
    skipped: list[FileNote],
    started: float,
    progress: bool,
    log: Callable[[str], None] | None,
    pool=None,
) -> ConversionReport:
    if not ids:
        raise ConversionError(
            input_description.get("input_dir") or input_description.get("images_dir"),
            f"no file could be converted ({len(skipped)} skipped)",
        )
    plan = _plan_splits(ids, options, skipped)
    tasks: list[_Task] = []
    for split, split_ids in plan.items():
        for source_id in split_ids:
            tasks.append(
                _Task(len(tasks), source_id, split, kind, make_payload(source_id), len(tasks) < options.preview)
            )
    num_shards = {split: _shard_count(len(split_ids), options.shards) for split, split_ids in plan.items()}

    def build(tmp: str) -> ConversionReport:
        state = _write_records(tmp, tasks, plan, num_shards, options, progress, skipped, pool)
        return _finish(tmp, kind, state, plan, class_names, options, input_description, output_dir, skipped, started)

    report = _in_staging(output_dir, options.overwrite, build)
    _log(log, report.to_text())
    return report


def _plan_splits(ids: Sequence[str], options: _Options, skipped: Sequence[FileNote]) -> dict[str, list[str]]:
    """Split ``ids`` by the split file, or by fractions and seed (each list sorted)."""
    if options.assignment is not None:
        # with --on-error skip, a listed file that was skipped as bad is not "unknown"
        return apply_split_file(ids, options.assignment, path=options.split_file,
                                missing_ok=list(options.assignment) if skipped else ())
    return assign_splits(ids, options.fractions, seed=options.seed)


def _shard_count(num_records: int, shards: int | None) -> int:
    """Shards of a split of ``num_records``: ``shards`` (at most one per record), else one per 500."""
    if not num_records:
        return 0
    return min(num_records, shards or max(1, math.ceil(num_records / RECORDS_PER_SHARD)))


def _shard_of(position: int, num_records: int, num_shards: int) -> int:
    """The shard of the ``position``-th record (in split order) of a split: contiguous, even runs."""
    return position * num_shards // num_records


def _in_staging(output_dir: str, overwrite: bool, build: Callable[[str], ConversionReport]) -> ConversionReport:
    """Run ``build(staging_folder)`` and rename the folder to ``output_dir`` once it returns.

    On any failure the staging folder is removed (an earlier output stays
    untouched) and a failure to write becomes a :class:`ConversionError`
    naming the file and the cause.
    """
    tmp = None
    try:
        tmp = output.stage(output_dir)
        report = build(tmp)
        output.move_into_place(tmp, output_dir, overwrite=overwrite)
    except BaseException as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        failure = _write_failure(e, output_dir)
        if failure is not None:
            raise failure from e
        raise
    return report


_WRITE_ERRNOS = frozenset(
    code for code in (getattr(errno, name, None) for name in
                      ("ENOSPC", "EDQUOT", "EFBIG", "EACCES", "EPERM", "EROFS", "EIO")) if code is not None
)
_TF_WRITE_CAUSES = ((errno.ENOSPC, "No space left"), (errno.EFBIG, "too large"),
                    (errno.EACCES, "Permission denied"), (errno.EROFS, "Read-only"))


def _write_failure(error: BaseException, output_dir: str) -> ConversionError | None:
    """A ``ConversionError`` for a failure to write the output (disk full, quota,
    permissions, file too large), or ``None`` for any other error."""
    tf = sys.modules.get("tensorflow")
    if isinstance(error, OSError):
        if error.errno not in _WRITE_ERRNOS:
            return None
        cause = error.strerror or str(error)
        where = error.filename or output_dir
        code = error.errno
    elif tf is not None and isinstance(error, tf.errors.OpError):
        # TFRecordWriter reports write errors as ResourceExhausted/Unknown/... "<file>; <reason>"
        message = (error.message or str(error)).strip().splitlines()[0]
        where, _, cause = message.rpartition("; ")
        if not where.startswith(os.path.dirname(output_dir) + os.sep):
            return None  # not about a file we were writing
        cause = cause or message
        code = next((c for c, text in _TF_WRITE_CAUSES if text in message), None)
    else:
        return None
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        hint = "free disk space (or choose an OUTPUT_DIR on a larger disk) and run again"
    elif code == errno.EFBIG:
        hint = "a file size limit was reached (ulimit -f, or the file system's largest file); use more --shards"
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "make the folder writable, or choose another OUTPUT_DIR"
    else:
        hint = "check the disk and run again"
    return ConversionError(
        printable(where),
        f"cannot write the output ({cause}); {hint}. Nothing was written: the partial output "
        f"was removed and any earlier {os.path.basename(output_dir)} is unchanged",
    )


@dataclasses.dataclass
class _State:
    written: dict[str, list[str]]
    class_pixels: dict[str, np.ndarray]
    class_images: dict[str, np.ndarray]
    stats: list[tuple[str, dict]]
    dtypes: dict[str, str]
    channels: dict[str, int]
    warnings: list[FileNote]
    previews: list[str]


def _write_records(
    tmp: str,
    tasks: list[_Task],
    plan: dict[str, list[str]],
    num_shards: dict[str, int],
    options: _Options,
    progress: bool,
    skipped: list[FileNote],
    pool=None,
) -> _State:
    from kerasseg import schema
    from kerasseg.tfrecord_file import RecordFileWriter

    results = _results(tasks, pool, progress)
    state = _State(
        written={split: [] for split in plan},
        class_pixels={split: np.zeros(256, np.int64) for split in plan},
        class_images={split: np.zeros(256, np.int64) for split in plan},
        stats=[], dtypes={}, channels={}, warnings=[], previews=[],
    )
    rank = {(split, source_id): i for split, ids in plan.items() for i, source_id in enumerate(ids)}
    position_in_split = {task.position: rank[(task.split, task.source_id)] for task in tasks}
    writer = None
    writer_key = None
    try:
        for result in results:
            task = tasks[result["position"]]
            if not result["ok"]:
                if options.on_error == "stop":
                    raise AnnotationError(result["path"], result["problem"])
                skipped.append(FileNote(result["path"], result["problem"]))
                continue
            split = task.split
            shard = _shard_of(position_in_split[task.position], len(plan[split]), num_shards[split])
            key = (split, shard)
            if writer is None or key != writer_key:
                if writer is not None:
                    writer.close()
                writer_key = key
                writer = RecordFileWriter(os.path.join(tmp, schema.shard_filename(split, shard, num_shards[split])))
            writer.write(result["record"], framed=True)  # serialized and framed by the worker
            state.written[split].append(task.source_id)
            state.class_pixels[split] += result["class_pixels"]
            state.class_images[split] += result["class_pixels"] > 0
            state.stats.append((split, result["stats"]))
            state.dtypes[task.source_id] = result["dtype"]
            state.channels[task.source_id] = result["channels"]
            for note in result["notes"]:
                state.warnings.append(FileNote(result["path"], note))
            if result["preview_png"] is not None:
                name = os.path.join("preview", task.source_id.replace("/", "__") + ".png")
                os.makedirs(os.path.join(tmp, "preview"), exist_ok=True)
                with open(os.path.join(tmp, name), "wb") as f:
                    f.write(result["preview_png"])
                state.previews.append(name.replace(os.sep, "/"))
    finally:
        if writer is not None:
            writer.close()
    _drop_empty_shards(tmp, num_shards, schema)
    return state


def _drop_empty_shards(tmp: str, num_shards: dict[str, int], schema) -> None:
    """Renumber each split's shards without the empty ones (all their examples skipped).

    A 0-byte shard in a finished dataset is then always a sign of damage,
    which ``kerasseg.schema.check_dataset`` reports.
    """
    for split, count in num_shards.items():
        kept = []
        for shard in range(count):
            path = os.path.join(tmp, schema.shard_filename(split, shard, count))
            if os.path.exists(path) and os.path.getsize(path) > 0:
                kept.append(path)
            elif os.path.exists(path):
                os.remove(path)
        for index, path in enumerate(kept):
            target = os.path.join(tmp, schema.shard_filename(split, index, len(kept)))
            if target != path:
                os.rename(path, target)


def _deterministic(tf, serialized: bytes) -> bytes:
    """Re-serialize an Example with its feature map in sorted key order.

    Protobuf writes map entries in an order that can differ between Python
    processes (hash seeds); sorting makes records byte-identical across runs.
    """
    return tf.train.Example.FromString(serialized).SerializeToString(deterministic=True)


def _start_pool(workers: int, num_items: int):
    """Start the worker processes (they check the sources, then convert); ``None`` for ``workers <= 1``.

    Workers never touch TensorFlow (the 2D converters never load it). They are
    forked when TensorFlow is not loaded in this process (fast start), after
    the image libraries every worker needs are imported here once
    (:func:`_preload_worker_modules`), else spawned clean (forking a process
    that runs TensorFlow's threads is unsafe).
    """
    if workers <= 1 or num_items <= 1:
        return None
    method = "spawn"
    if "fork" in multiprocessing.get_all_start_methods() and "tensorflow" not in sys.modules:
        method = "fork"
        _preload_worker_modules()
    return multiprocessing.get_context(method).Pool(min(workers, num_items))


def _preload_worker_modules() -> None:
    """Import Pillow (with its common format plugins), OpenCV and the record writer's checksum.

    Forked workers inherit them instead of each importing them on its first
    file (~0.2 CPU seconds per worker). Nothing here starts a thread.
    """
    import cv2  # noqa: F401
    from PIL import Image, ImageDraw  # noqa: F401

    import kerasseg.tfrecord_file  # noqa: F401

    Image.preinit()


def _stop_pool(pool) -> None:
    if pool is not None:
        pool.terminate()
        pool.join()


def _results(tasks: list, pool, progress: bool, worker: Callable[[Any], dict] | None = None, *,
             unit: str = "img") -> Iterator[dict]:
    """Results of ``worker`` (default :func:`process_task`) in task order; with a pool the
    tasks are submitted right away."""
    worker = process_task if worker is None else worker
    if pool is None:
        results: Iterable[dict] = (worker(task) for task in tasks)
    else:
        results = pool.imap(worker, tasks, chunksize=_chunksize(len(tasks), pool))
    if not progress:
        return iter(results)
    return _with_progress(results, len(tasks), unit=unit)


def _with_progress(results: Iterable[dict], total: int, *, unit: str = "img") -> Iterator[dict]:
    from tqdm import tqdm

    with tqdm(total=total, unit=unit, desc="converting", file=sys.stderr) as bar:
        for result in results:
            yield result
            bar.update(1)


def _finish(
    tmp: str,
    kind: str,
    state: _State,
    plan: dict[str, list[str]],
    class_names: list[str] | None,
    options: _Options,
    input_description: dict[str, Any],
    output_dir: str,
    skipped: list[FileNote],
    started: float,
) -> ConversionReport:
    from kerasseg import schema

    total = sum(len(v) for v in state.written.values())
    if total == 0:
        raise ConversionError(
            input_description.get("input_dir") or input_description.get("images_dir"),
            f"no file could be converted ({len(skipped)} skipped; see the reasons above)",
        )
    dtypes = sorted(set(state.dtypes.values()))
    if len(dtypes) > 1:
        minority = min(dtypes, key=lambda d: sum(1 for v in state.dtypes.values() if v == d))
        example = next(i for i, d in state.dtypes.items() if d == minority)
        raise ConversionError(
            example, f"mixed bit depths in one dataset ({', '.join(dtypes)}); convert the images to one depth"
        )
    image_dtype = dtypes[0]
    channels = max(state.channels.values())
    warnings = list(state.warnings)
    if len(set(state.channels.values())) > 1:
        warnings.append(FileNote(output_dir, "grayscale and colour images mixed: records keep their own "
                                 "channels; the dataset is read as 3-channel (grayscale repeated)"))

    max_id = max((int(np.nonzero(c[:IGNORE_INDEX])[0].max()) for c in state.class_pixels.values() if c[:IGNORE_INDEX].any()), default=0)
    if class_names is None:  # mask folders without a class map: ids are the values
        count = max(2, max_id + 1)
        class_names = ["background", "foreground"] if count == 2 else ["background"] + [f"class_{i}" for i in range(1, count)]
    if max_id >= len(class_names):
        raise ConversionError(None, f"masks contain class id {max_id} but only {len(class_names)} classes are known")
    n_classes = len(class_names)

    fold_lists = assign_folds(state.written["train"], options.folds, seed=options.seed) if options.folds else []
    _write_split_lists(tmp, state.written, fold_lists)

    stats_split = "train" if state.written.get("train") else next(s for s, ids in state.written.items() if ids)
    intensity = _intensity([s for split, s in state.stats if split == stats_split], channels, image_dtype)
    intensity["split"] = stats_split
    split_counts = {split: len(ids) for split, ids in state.written.items()}
    shard_counts = {split: len(glob.glob(os.path.join(tmp, schema.shard_glob(split)))) for split in plan}
    source = {"converter": "labelme2tfrecord" if kind == "labelme" else "masks2tfrecord", **input_description,
              "split": options.fractions, "seed": options.seed, "skipped": len(skipped)}
    if options.split_file is not None:
        source["split_file"] = os.path.abspath(options.split_file)
    info = schema.DatasetInfo(
        class_names=list(class_names),
        splits=split_counts,
        shards=shard_counts,
        class_pixel_counts={s: [int(v) for v in c[:n_classes]] for s, c in state.class_pixels.items()},
        intensity=intensity,
        channels=channels,
        image_dtype=image_dtype,
        ignore_index=IGNORE_INDEX,
        num_folds=options.folds,
        source=source,
    )
    report = ConversionReport(
        output_dir=output_dir,
        converter=kind,
        class_names=list(class_names),
        split_counts=split_counts,
        class_pixel_counts=info.class_pixel_counts,
        class_image_counts={s: [int(v) for v in c[:n_classes]] for s, c in state.class_images.items()},
        ignore_pixels={s: int(c[IGNORE_INDEX]) for s, c in state.class_pixels.items()},
        shards=shard_counts,
        num_folds=options.folds,
        skipped=list(skipped),
        warnings=warnings,
        previews=state.previews,
        workers=options.workers,
        seconds=time.perf_counter() - started,
    )
    _save(tmp, report, info)
    return report


def _write_split_lists(tmp: str, written: Mapping[str, Sequence[str]],
                       fold_lists: Sequence[Mapping[str, Sequence[str]]]) -> None:
    """``splits/<split>.txt`` for each split and ``splits/fold{k}_train.txt`` / ``fold{k}_val.txt``."""
    from kerasseg import schema

    splits_dir = os.path.join(tmp, schema.SPLITS_DIRNAME)
    os.makedirs(splits_dir)
    for split, ids in written.items():
        _write_lines(os.path.join(splits_dir, f"{split}.txt"), ids)
    for k, fold in enumerate(fold_lists):
        _write_lines(os.path.join(splits_dir, f"fold{k}_train.txt"), fold["train"])
        _write_lines(os.path.join(splits_dir, f"fold{k}_val.txt"), fold["val"])


def _save(tmp: str, report: ConversionReport, info) -> None:
    """Write ``report.json``/``report.txt``, then ``dataset.json`` and the manifest, last."""
    from kerasseg import schema

    with open(os.path.join(tmp, "report.json"), "w", encoding="utf-8") as f:
        f.write(report.to_json())
    with open(os.path.join(tmp, "report.txt"), "w", encoding="utf-8") as f:
        f.write(report.to_text())
    schema.write_dataset_info(tmp, info)  # its presence means "finished"
    output.write_manifest(tmp, info.source["converter"])  # what --overwrite may replace later


def _intensity(stats: list[dict], channels: int, dtype: str) -> dict[str, Any]:
    total = [0] * channels
    total_sq = [0] * channels
    lo: list[float] = [math.inf] * channels
    hi: list[float] = [-math.inf] * channels
    count = 0
    for s in stats:
        for c in range(channels):
            k = 0 if len(s["sum"]) == 1 else c  # grayscale counts for every channel
            total[c] += s["sum"][k]
            total_sq[c] += s["sumsq"][k]
            lo[c] = min(lo[c], s["min"][k])
            hi[c] = max(hi[c], s["max"][k])
        count += s["count"]
    count = max(count, 1)
    mean = [t / count for t in total]
    std = [math.sqrt(max((count * q - t * t) / (count * count), 0.0)) for q, t in zip(total_sq, total)]
    return {
        "mean": [round(v, 6) for v in mean],
        "std": [round(v, 6) for v in std],
        "min": [float(v) for v in lo],
        "max": [float(v) for v in hi],
        "dtype": dtype,
        "pixels": int(count),
    }


def _write_lines(path: str, lines: Iterable[str]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")


# -- per-example work (runs in workers; no TensorFlow here) ------------------------------------


def process_task(task: _Task) -> dict:
    """Convert one example; return a plain dict (errors are returned, not raised)."""
    path = task.payload[0]
    try:
        roi = None
        if task.kind == "labelme":
            image, mask, filename, notes, path = _labelme_example(task)
        else:
            image, mask, filename, notes, path, roi = _mask_example(task)
        return _result(task, image, mask, filename, notes, path, roi)
    except AnnotationError as e:
        return {"ok": False, "position": task.position, "path": e.path or path, "problem": e.problem}
    except MemoryError:
        raise
    except Exception as e:  # a decoder bug or odd file must not kill the whole run silently
        return {"ok": False, "position": task.position, "path": path,
                "problem": f"unexpected {type(e).__name__}: {e}"}


def _labelme_example(task: _Task):
    from data_tools.labelme import read_labelme_sample

    json_path, input_dir, class_ids, max_pixels = task.payload
    sample = read_labelme_sample(json_path, class_ids=class_ids, input_dir=input_dir, max_pixels=max_pixels)
    return sample.image, sample.mask, sample.filename, sample.notes, json_path


def _mask_example(task: _Task):
    from data_tools.images import decode_image
    from data_tools.masks import combine_masks, read_mask, read_roi

    image_path, mask_paths, images_dir, threshold, cmap, max_pixels, roi_path = task.payload
    try:
        with open(image_path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise AnnotationError(image_path, f"cannot read the image ({e.strerror or e})") from e
    image = decode_image(raw, path=image_path, apply_exif=True, max_pixels=max_pixels)
    masks = [read_mask(p, threshold=threshold, class_map=cmap, max_pixels=max_pixels) for p in mask_paths]
    for p, m in zip(mask_paths, masks):
        if m.shape != (image.height, image.width):
            raise AnnotationError(
                p, f"mask is {m.shape[1]}x{m.shape[0]} but the image {os.path.basename(image_path)} "
                f"is {image.width}x{image.height}"
            )
    mask = combine_masks(masks, mask_paths)
    roi = None
    if roi_path is not None:
        roi = read_roi(roi_path, max_pixels=max_pixels)
        if roi.shape != mask.shape:
            raise AnnotationError(roi_path, f"ROI is {roi.shape[1]}x{roi.shape[0]} but the image "
                                  f"{os.path.basename(image_path)} is {image.width}x{image.height}")
        mask = np.where(roi, mask, IGNORE_INDEX).astype(np.uint8)
    notes = list(image.notes)
    if len(mask_paths) > 1:
        notes.append(f"{len(mask_paths)} mask files combined: " + ", ".join(os.path.basename(p) for p in mask_paths))
    filename = os.path.relpath(image_path, images_dir).replace(os.sep, "/")
    return image, mask, filename, notes, image_path, roi


_EXACT_FLOAT32_COUNT = 1 << 24
"""OpenCV histograms count in float32, exact up to 2**24 per bin."""


def _histogram(pixels: np.ndarray, channel: int) -> np.ndarray:
    """Exact int64 counts of each value of ``pixels[:, :, channel]`` (uint8: 256 bins, uint16: 65536).

    ``cv2.calcHist`` (several times faster than ``np.bincount``) over row blocks
    of at most 2**24 pixels, so its float32 counts stay exact.
    """
    bins = 256 if pixels.dtype == np.uint8 else 65536
    height, width = pixels.shape[:2]
    if width > _EXACT_FLOAT32_COUNT:
        return np.bincount(pixels[:, :, channel].ravel(), minlength=bins).astype(np.int64)
    import cv2

    rows = max(1, _EXACT_FLOAT32_COUNT // width)
    counts = np.zeros(bins, np.int64)
    for top in range(0, height, rows):
        block = np.ascontiguousarray(pixels[top:top + rows])
        counts += cv2.calcHist([block], [channel], None, [bins], [0, bins]).reshape(-1).astype(np.int64)
    return counts


def _channel_stats(pixels: np.ndarray) -> dict:
    """Exact per-channel sum, sum of squares, min, max of an integer ``(H, W, C)`` image.

    Computed from histograms with integer arithmetic, so the dataset totals do
    not depend on summation order (or worker count).
    """
    sums, sumsq, lows, highs = [], [], [], []
    for c in range(pixels.shape[2]):
        hist = _histogram(pixels, c)
        present = np.nonzero(hist)[0]
        values = np.arange(hist.size, dtype=np.int64)
        sums.append(int(np.dot(hist, values)))
        sumsq.append(int(np.dot(hist, values * values)))
        lows.append(int(present[0]))
        highs.append(int(present[-1]))
    return {"sum": sums, "sumsq": sumsq, "min": lows, "max": highs, "count": int(pixels.shape[0] * pixels.shape[1])}


def _result(task: _Task, image, mask: np.ndarray, filename: str, notes: list[str], path: str,
            roi: np.ndarray | None = None) -> dict:
    from data_tools.images import encode_png
    from data_tools.preview import overlay

    from kerasseg import schema
    from kerasseg.tfrecord_file import frame_record

    pixels = image.pixels
    stats = _channel_stats(pixels)
    preview_png = encode_png(overlay(pixels, mask)) if task.preview else None
    record = schema.encode_example(
        image_bytes=image.encoded, image_format=image.format, height=image.height, width=image.width,
        channels=image.channels, mask_png=encode_png(mask),
        roi_png=None if roi is None else encode_png(np.where(roi, 255, 0).astype(np.uint8)),
        filename=filename, source_id=task.source_id,
    )
    return {
        "ok": True,
        "position": task.position,
        "path": path,
        "record": frame_record(record),
        "channels": image.channels,
        "dtype": image.dtype,
        "class_pixels": _histogram(mask[:, :, None], 0),
        "stats": stats,
        "notes": notes,
        "preview_png": preview_png,
    }


__all__ = ["ON_ERROR_CHOICES", "convert_labelme", "convert_mask_folder", "convert_mask_list", "process_task"]
