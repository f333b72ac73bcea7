"""The volume side of ``kerasseg evaluate``, ``predict`` and ``export`` (models trained on volumes).

A model is a volume model when its ``model_info.json`` has a ``volume`` section
(:class:`kerasseg.artifacts.VolumeGeometry`): the training patch size, the
spacing it was trained at and the sliding-window overlap. Every command then
runs it through :class:`kerasseg.volume_inference.VolumePredictor` (resample to
the model's spacing, normalize, Gaussian-weighted sliding window, resample the
probabilities back to the volume's own grid), so evaluate, predict and
validation during training compute masks the same way, and the SavedModel
runs the same steps in its graph.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from kerasseg.errors import CommandError
from kerasseg.commands._shared import write_evaluation_reports

MASK_FORMATS = {"nifti": ".nii.gz", "nrrd": ".nrrd", "mha": ".mha"}


def is_volume_model(model_path: str) -> bool:
    """True when the ``model_info.json`` beside ``model_path`` describes a volume model."""
    from kerasseg.artifacts import read_model_info
    from kerasseg.errors import ArtifactError

    try:
        info = read_model_info(model_path)
    except ArtifactError as e:
        raise CommandError(str(e)) from None
    return info is not None and info.volume is not None


def refuse_2d_flags(args: argparse.Namespace) -> None:
    """Flags of the 2D path that have no meaning for volumes are refused, not ignored."""
    if getattr(args, "crf", False):
        raise CommandError("--crf: the dense CRF refines 2D images; it is not available for volume models")
    if getattr(args, "tile", None) is not None:
        raise CommandError("--tile is for 2D models; a volume model slides its training patch "
                           "(model_info.json volume.patch_size) over the volume (--overlap sets the overlap)")
    if getattr(args, "overlap", None) is not None and not 0.0 <= args.overlap < 1.0:
        raise CommandError(f"--overlap must be in [0, 1), got {args.overlap}")


def predictor_for(loaded: Any, args: argparse.Namespace) -> Any:
    """The :class:`~kerasseg.volume_inference.VolumePredictor` of a loaded volume model and the flags."""
    from kerasseg.volume_inference import VolumePredictor

    refuse_2d_flags(args)
    geometry = loaded.info.volume
    overlap = geometry.overlap if getattr(args, "overlap", None) is None else float(args.overlap)
    return VolumePredictor(loaded.model, normalization=loaded.normalization, patch_size=geometry.patch_size,
                           spacing=geometry.spacing, overlap=overlap, tta=bool(getattr(args, "tta", False)))


def evaluate(args: argparse.Namespace, loaded: Any, info: Any, class_names: list[str],
             report_path: str, csv_path: str) -> int:
    """Score every volume of ``args.split`` at its stored grid; Dice/IoU per class, HD95/ASSD in mm."""
    import tqdm

    from kerasseg import inference
    from kerasseg.data.volumes import iterate_volumes
    from kerasseg.evaluation import SegmentationEvaluator

    if not info.is_volume:
        raise CommandError(f"{args.model} is a volume model but {args.data} holds 2D images")
    if args.spacing is not None:
        raise CommandError("--spacing is for 2D datasets: volume records carry their own spacing (mm)")
    predictor = predictor_for(loaded, args)
    evaluator = SegmentationEvaluator(len(class_names), class_names, ignore_index=info.ignore_index)
    total = int(info.splits[args.split])
    if args.limit is not None:
        total = min(total, args.limit)
    print(f"geometry: {loaded.info.volume.describe()}" + (", flip TTA" if args.tta else ""), file=sys.stderr)
    progress = tqdm.tqdm(total=total, desc=f"evaluate {args.split}", unit="volume", file=sys.stderr)
    try:
        for index, volume in enumerate(iterate_volumes(args.data, args.split)):
            if index >= total:
                break
            labels = predictor.predict_labels(volume["voxels"], spacing=volume["spacing"])
            evaluator.update(volume["mask"], labels, name=volume["source_id"],
                             filename=volume["filename"], spacing=tuple(volume["spacing"]))
            progress.update(1)
    except inference.InferenceError as e:
        raise CommandError(str(e)) from None
    finally:
        progress.close()
    print(evaluator.format_table())
    write_evaluation_reports(evaluator, report_path, csv_path, unit="volume")
    return 0


def list_volume_inputs(inputs: list[str]) -> list[tuple[str, str]]:
    """``(case id, path)`` of every volume named: files, DICOM series folders, folders of volumes."""
    from kerasseg.volume_io import find_volumes, is_volume_path

    found: list[tuple[str, str]] = []
    for item in inputs:
        if os.path.isfile(item):
            if not is_volume_path(item):
                raise CommandError(f"{item}: not a volume file (NIfTI .nii/.nii.gz, NRRD, MHA/MHD) for a "
                                   "volume model")
            found.append((_case_id(item), item))
        elif os.path.isdir(item):
            listed = find_volumes(item)
            if not listed:
                raise CommandError(f"{item}: no volumes (NIfTI, NRRD, MHA/MHD files or DICOM series) found")
            # a DICOM series folder given itself is one volume named after the folder
            found += [(os.path.basename(os.path.normpath(item)) if case in ("", ".") else case, path)
                      for case, path in listed]
        else:
            raise CommandError(f"{item}: no such file or folder")
    seen: dict[str, str] = {}
    for case, path in found:
        if case in seen and seen[case] != path:
            raise CommandError(f"{path} and {seen[case]} would both write the mask of {case!r}; rename one")
        seen[case] = path
    return found


def _case_id(path: str) -> str:
    name = os.path.basename(path)
    for ext in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return os.path.splitext(name)[0]


def predict(args: argparse.Namespace, loaded: Any) -> int:
    """Write ``OUT/<case>_mask.nii.gz`` (``--format``) with each input's own geometry."""
    import numpy as np

    from kerasseg import inference
    from kerasseg.volume_inference import probabilities_to_labels
    from kerasseg.volume_io import VolumeError, read_volume, write_volume

    cases = list_volume_inputs(args.inputs)
    predictor = predictor_for(loaded, args)
    suffix = MASK_FORMATS[args.format]
    os.makedirs(args.out, exist_ok=True)
    for case, path in cases:
        try:
            volume = read_volume(path)
            if args.probabilities:
                probs = predictor(volume.voxels, spacing=volume.spacing)
                mask = np.asarray(probabilities_to_labels(probs), np.uint8)
            else:
                mask = predictor.predict_labels(volume.voxels, spacing=volume.spacing)
        except VolumeError as e:
            raise CommandError(str(e)) from None
        except inference.InferenceError as e:
            raise CommandError(f"{path}: {e}" if path not in str(e) else str(e)) from None
        safe = case.replace("/", "__")
        target = os.path.join(args.out, f"{safe}_mask{suffix}")
        print(f"generating: {target}", flush=True)
        write_volume(target, mask, like=volume)
        if args.overlay:
            target = os.path.join(args.out, f"{safe}_overlay.png")
            print(f"generating: {target}", flush=True)
            middle = mask.shape[0] // 2
            voxels = volume.voxels if volume.voxels.ndim == 3 else volume.voxels[..., 0]
            inference.save_overlay(target, _window(voxels[middle]), mask[middle])
        if args.probabilities:
            target = os.path.join(args.out, f"{safe}_prob")
            print(f"generating: {target}.npy", flush=True)
            inference.save_probabilities(target, probs, fmt="npy")  # float32, written atomically
    return 0


def _window(pixels: Any) -> Any:
    """A slice windowed to uint8 over its 0.5/99.5 percentiles, for overlays."""
    import numpy as np

    data = np.asarray(pixels, np.float64)
    lo, hi = np.percentile(data, [0.5, 99.5])
    return (np.clip((data - lo) / max(hi - lo, 1e-9), 0, 1) * 255).astype(np.uint8)


def export(args: argparse.Namespace, loaded: Any) -> str:
    """Export a volume model as a SavedModel taking raw volumes (see :mod:`kerasseg.volume_export`)."""
    from kerasseg.volume_export import export_volume_model

    refuse_2d_flags(args)
    geometry = loaded.info.volume
    return export_volume_model(
        loaded.model, args.export_dir, class_names=loaded.class_names, normalization=loaded.normalization,
        patch_size=geometry.patch_size, spacing=geometry.spacing,
        overlap=geometry.overlap if getattr(args, "overlap", None) is None else float(args.overlap),
        channels=loaded.info.channels or 1, version=getattr(args, "version", None),
        overwrite=bool(getattr(args, "overwrite", False)), model_info=loaded.info.to_dict(),
    )


__all__ = ["MASK_FORMATS", "is_volume_model", "evaluate", "predict", "export", "list_volume_inputs"]
