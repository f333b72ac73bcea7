"""labelme -> TFRecord conversion speed: ``--workers 2`` against ``--workers 1``.

Converts the same synthetic labelme folder (``data_tools.phantom``: 512x512
grayscale frames, polygon lesions, every 10th image embedded as imageData)
twice in one run, once per worker count, and reports images/s and their ratio.
TensorFlow is imported before timing, so both runs pay the same fixed costs;
worker start-up is inside the timing (users pay it). The two outputs are also
compared byte for byte (records, dataset.json, split lists).

    python benchmarks/bench_convert.py [--quick]
"""

from __future__ import annotations

import argparse
import filecmp
import os
import pathlib
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _identical(a: pathlib.Path, b: pathlib.Path) -> bool:
    names = sorted(p.name for p in a.glob("*.tfrecord")) + ["dataset.json"]
    names_b = sorted(p.name for p in b.glob("*.tfrecord")) + ["dataset.json"]
    if names != names_b:
        return False
    pairs = [(a / n, b / n) for n in names] + [
        (p, b / "splits" / p.name) for p in sorted((a / "splits").iterdir())
    ]
    return all(filecmp.cmp(x, y, shallow=False) for x, y in pairs)


def run(quick: bool = False) -> dict[str, float]:
    """Convert ``200`` (quick: ``24``) 512x512 labelme files with 1 and 2 workers.

    Returns:
        ``{"convert_speedup_2_workers", "convert_images_per_s_1_worker",
        "convert_images_per_s_2_workers"}``.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf  # noqa: F401  (fixed cost kept out of the timings)

    from data_tools import convert_labelme
    from data_tools.phantom import generate_phantom_dataset

    num_images = 24 if quick else 200
    with tempfile.TemporaryDirectory(prefix="bench_convert_") as tmp:
        work = pathlib.Path(tmp)
        generate_phantom_dataset(work / "labelme", num_images=num_images, size=512, seed=0)
        rates = {}
        for workers in (1, 2):
            out = work / f"records_w{workers}"
            started = time.perf_counter()
            report = convert_labelme(
                work / "labelme", out, split="train=0.8,val=0.2", seed=0, shards=4, workers=workers
            )
            seconds = time.perf_counter() - started
            assert report.num_examples == num_images, report.to_text()
            rates[workers] = num_images / seconds
            print(f"workers={workers}: {num_images} images in {seconds:.2f} s = {rates[workers]:.1f} images/s")
        same = _identical(work / "records_w1", work / "records_w2")
        print(f"outputs byte-identical across worker counts: {same}")
        if not same:
            raise AssertionError("workers=1 and workers=2 wrote different records")
    ratio = rates[2] / rates[1]
    print(f"convert_speedup_2_workers = {ratio:.2f} (images/s with 2 workers / 1 worker, {os.cpu_count()} CPUs)")
    return {
        "convert_speedup_2_workers": round(ratio, 3),
        "convert_images_per_s_1_worker": round(rates[1], 2),
        "convert_images_per_s_2_workers": round(rates[2], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="24 images instead of 200")
    args = parser.parse_args(argv)
    print(run(quick=args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
