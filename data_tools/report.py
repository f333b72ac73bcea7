"""The conversion report: what was converted, what was skipped and why."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any


@dataclasses.dataclass
class FileNote:
    """A file and a message about it (a skip reason or a warning)."""

    path: str
    message: str


@dataclasses.dataclass
class ConversionReport:
    """Summary of one conversion, returned by the converters and saved as
    ``report.json`` and ``report.txt`` in the output folder.

    Attributes:
        output_dir: the dataset folder written.
        converter: ``"labelme"`` or ``"masks"``.
        class_names: class names in id order.
        split_counts: examples written per split.
        class_pixel_counts: per split, pixels of each class id (ignore excluded).
        class_image_counts: per split, number of images containing each class.
        ignore_pixels: per split, pixels marked ignore (255).
        shards: shard files per split.
        num_folds: k of the k-fold lists written (0 = none).
        skipped: every file left out and why.
        warnings: things changed on the way (clipped points, dropped alpha...).
        previews: overlay PNGs written (relative to ``output_dir``).
        workers: processes used.
        seconds: wall time of the conversion.
        tensorflow_import_seconds: part of ``seconds`` spent importing
            TensorFlow (a fixed cost, whatever the number of images; 0 for
            labelme and mask folders, whose converters never import it).
    """

    output_dir: str
    converter: str
    class_names: list[str]
    split_counts: dict[str, int]
    class_pixel_counts: dict[str, list[int]]
    class_image_counts: dict[str, list[int]]
    ignore_pixels: dict[str, int]
    shards: dict[str, int]
    num_folds: int = 0
    skipped: list[FileNote] = dataclasses.field(default_factory=list)
    warnings: list[FileNote] = dataclasses.field(default_factory=list)
    previews: list[str] = dataclasses.field(default_factory=list)
    workers: int = 1
    seconds: float = 0.0
    tensorflow_import_seconds: float = 0.0

    @property
    def num_examples(self) -> int:
        return sum(self.split_counts.values())

    @property
    def images_per_second(self) -> float:
        return self.num_examples / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["num_examples"] = self.num_examples
        data["images_per_second"] = round(self.images_per_second, 3)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_text(self) -> str:
        """Human-readable summary (what the CLI prints)."""
        lines = [
            f"converted {self.num_examples} examples ({self.converter}) into {self.output_dir} "
            f"in {self.seconds:.1f} s with {self.workers} worker(s) ({self.images_per_second:.1f} images/s)",
        ]
        for split, count in self.split_counts.items():
            lines.append(f"  {split}: {count} examples in {self.shards.get(split, 0)} shard(s)")
        if self.num_folds:
            lines.append(f"  {self.num_folds}-fold lists of the train split in splits/")
        width = max((len(name) for name in self.class_names), default=5)
        splits = list(self.split_counts)
        header = f"  {'class':<{width}}  " + "  ".join(f"{s + ' images':>14} {s + ' pixels':>16}" for s in splits)
        lines += ["", header]
        for i, name in enumerate(self.class_names):
            cells = []
            for s in splits:
                images = self.class_image_counts.get(s, [0] * len(self.class_names))[i]
                pixels = self.class_pixel_counts.get(s, [0] * len(self.class_names))[i]
                cells.append(f"{images:>14} {pixels:>16}")
            lines.append(f"  {name:<{width}}  " + "  ".join(cells))
        if any(self.ignore_pixels.values()):
            ignore_cells = "  ".join(f"{'':>14} {self.ignore_pixels.get(s, 0):>16}" for s in splits)
            lines.append(f"  {'(ignore)':<{width}}  {ignore_cells}")
        lines.append("")
        lines.append(f"skipped {len(self.skipped)} file(s)" + (":" if self.skipped else ""))
        lines += [f"  {note.path}: {note.message}" for note in self.skipped]
        lines.append(f"warnings: {len(self.warnings)}" + (":" if self.warnings else ""))
        lines += _grouped_notes(self.warnings)
        if self.previews:
            lines.append(f"previews: {len(self.previews)} overlay PNG(s) in {self.output_dir}/preview/")
        return "\n".join(lines) + "\n"


# a message given for more files than this is printed once, with a count
_REPEATS_SHOWN = 3


def _grouped_notes(notes: list[FileNote]) -> list[str]:
    """One line per note, except that a message repeated for many files is summarised once
    with its count and the first files (every file stays listed in report.json)."""
    by_message: dict[str, list[str]] = {}
    for note in notes:
        by_message.setdefault(note.message, []).append(note.path)
    lines = []
    for message, paths in by_message.items():
        if len(paths) <= _REPEATS_SHOWN:
            lines += [f"  {path}: {message}" for path in paths]
        else:
            shown = ", ".join(os.path.basename(p) for p in paths[:_REPEATS_SHOWN])
            lines.append(f"  {message}: {len(paths)} files ({shown}, ...; all listed in report.json)")
    return lines


__all__ = ["ConversionReport", "FileNote"]
