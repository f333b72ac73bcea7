"""Add new splits to a converted dataset (``--append``): e.g. a ``test`` split from another folder.

The new files are converted on their own into a hidden folder beside the
dataset, checked against it, and merged into a staging copy of it (existing
files are hard-linked, or copied where links are not possible), which then
replaces the dataset in one rename, as ``--overwrite`` does. So the dataset is
never half-updated, and a refused append leaves it untouched.

What must agree: the class names (for masks without a class map, the new ids
must be known classes), the image storage type and channels. What must be new:
the split names (an append never changes an existing split, so the training
statistics in ``dataset.json`` stay those of the training split) and the source
ids. The merged ``dataset.json`` lists each append under ``source.appended``;
the append's report is saved as ``report_<split>.json``/``.txt``.
"""

from __future__ import annotations

import os
import shutil
from typing import Callable

from data_tools import output
from data_tools.errors import ConversionError
from data_tools.report import ConversionReport


def check_target(output_dir: str | os.PathLike, *, inputs: list[str]) -> str:
    """The dataset to append to, as an absolute path; refuse anything that is not one of ours."""
    from kerasseg import schema

    out = os.path.abspath(os.fspath(output_dir))
    for source in inputs:
        if out == source or os.path.commonpath([out, source]) == out:
            raise ConversionError(out, f"OUTPUT_DIR must not be (or contain) the input folder {source}")
    if not os.path.isfile(os.path.join(out, schema.DATASET_INFO_FILENAME)):
        raise ConversionError(out, "--append adds splits to a converted dataset, and this folder holds no "
                              "dataset.json; convert without --append first")
    try:
        schema.read_dataset_info(out)
    except schema.SchemaError as e:
        raise ConversionError(out, f"cannot append: {e}") from None
    output._check_replaceable(out)  # only a dataset we wrote is rewritten
    return out


def _link_or_copy(source: str, target: str) -> None:
    os.makedirs(os.path.dirname(target), exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _files(root: str) -> list[str]:
    found = []
    for folder, _, names in os.walk(root):
        found += [os.path.relpath(os.path.join(folder, n), root) for n in names]
    return sorted(found)


def append_splits(output_dir: str, convert: Callable[[str], ConversionReport]) -> ConversionReport:
    """Convert with ``convert(folder)`` into a hidden folder, then merge its splits into ``output_dir``.

    Raises:
        ConversionError: a split that exists already, source ids already in the
            dataset, other class names, storage type or channels.
    """
    from kerasseg import schema, tempdirs

    existing = schema.read_dataset_info(output_dir)
    parent, base = os.path.dirname(output_dir), os.path.basename(output_dir)
    scratch = tempdirs.make_staging_dir(parent, f"{output.TMP_PREFIX}{base}-append-")
    staging = None
    try:
        new_dir = os.path.join(scratch, "new")
        report = convert(new_dir)
        new = schema.read_dataset_info(new_dir)
        _check_compatible(output_dir, existing, new, new_dir)
        staging = output.stage(output_dir)
        for rel in _files(output_dir):
            if rel not in (schema.DATASET_INFO_FILENAME, output.MANIFEST_FILENAME):
                _link_or_copy(os.path.join(output_dir, rel), os.path.join(staging, rel))
        splits = "_".join(sorted(new.splits))
        for rel in _files(new_dir):
            if rel in (schema.DATASET_INFO_FILENAME, output.MANIFEST_FILENAME):
                continue
            target = rel
            if rel in ("report.json", "report.txt"):
                target = f"report_{splits}{os.path.splitext(rel)[1]}"
            elif rel.startswith("preview" + os.sep):
                target = os.path.join("preview", f"{splits}_{os.path.basename(rel)}")
            if os.path.exists(os.path.join(staging, target)):
                raise ConversionError(output_dir, f"{target} exists already; appending would replace it")
            _link_or_copy(os.path.join(new_dir, rel), os.path.join(staging, target))
        merged = existing
        merged.splits = {**existing.splits, **new.splits}
        merged.shards = {**existing.shards, **new.shards}
        merged.class_pixel_counts = {**existing.class_pixel_counts, **new.class_pixel_counts}
        if not existing.intensity and new.intensity:
            merged.intensity = new.intensity
        merged.source = {**existing.source, "appended": [*existing.source.get("appended", []), new.source]}
        schema.write_dataset_info(staging, merged)
        output.write_manifest(staging, existing.source.get("converter", new.source.get("converter", "masks2tfrecord")))
        output.move_into_place(staging, output_dir, overwrite=True)
        staging = None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    report.output_dir = output_dir
    return report


def _check_compatible(output_dir: str, existing, new, new_dir: str) -> None:
    from kerasseg import schema

    clash = sorted(set(existing.splits) & set(new.splits))
    if clash:
        raise ConversionError(output_dir, f"split(s) {', '.join(clash)} exist already (splits: "
                              f"{', '.join(existing.splits)}); --append adds new splits only (e.g. --split test)")
    if new.class_names != existing.class_names:
        implicit = new.source.get("class_map") is None and new.source.get("converter") == "masks2tfrecord"
        used = max((i for values in new.class_pixel_counts.values() for i, v in enumerate(values) if v), default=0)
        if not (implicit and used < existing.num_classes):
            raise ConversionError(output_dir, f"the new files have classes {new.class_names}, the dataset "
                                  f"{existing.class_names}; give the same --class-map / labels.txt")
        for split, values in new.class_pixel_counts.items():  # ids are values: pad to the dataset's classes
            new.class_pixel_counts[split] = list(values) + [0] * (existing.num_classes - len(values))
    if new.image_dtype != existing.image_dtype or new.channels != existing.channels:
        raise ConversionError(output_dir, f"the new images are {new.channels}-channel {new.image_dtype}, the "
                              f"dataset's {existing.channels}-channel {existing.image_dtype}")
    ids = {i for split in existing.splits for i in schema.read_split_ids(output_dir, split)}
    repeated = sorted(ids & {i for split in new.splits for i in schema.read_split_ids(new_dir, split)})
    if repeated:
        shown = ", ".join(repeated[:5]) + (f" and {len(repeated) - 5} more" if len(repeated) > 5 else "")
        raise ConversionError(output_dir, f"{len(repeated)} source id(s) are in the dataset already: {shown}; "
                              "ids are file names without extension below the input folder, so rename the "
                              "files or convert from a folder that holds them in a sub-folder (test/0)")


__all__ = ["append_splits", "check_target"]
