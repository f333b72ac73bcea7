"""labelme -> TFRecord conversion speed: ``--workers 2`` against ``--workers 1``.

Converts the same synthetic labelme folder (``data_tools.phantom``: 512x512
grayscale frames, polygon lesions, every 10th image embedded as imageData)
once per worker count, each in a fresh Python process as the
``labelme2tfrecord`` command runs (so workers are forked before TensorFlow is
loaded, as they are for users). The time is the whole conversion as a user
waits for it: source checks, worker start-up, the TensorFlow import (workers
already convert images meanwhile), decoding, rasterizing and writing. The two
outputs are also compared byte for byte (records, dataset.json, split lists).

    python benchmarks/bench_convert.py [--quick]
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import pathlib
import subprocess
import sys
import tempfile

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


_CHILD = """
import json, sys
from data_tools import convert_labelme
report = convert_labelme(sys.argv[1], sys.argv[2], split="train=0.8,val=0.2", seed=0, shards=4,
                         workers=int(sys.argv[3]))
print(json.dumps({"n": report.num_examples, "seconds": report.seconds,
                  "tf_import": report.tensorflow_import_seconds}))
"""


def _convert_in_fresh_process(src: pathlib.Path, out: pathlib.Path, workers: int) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(src), str(out), str(workers)],
        env=env, capture_output=True, text=True, timeout=1800,
    )
    if done.returncode != 0:
        raise RuntimeError(f"conversion with {workers} worker(s) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> dict[str, float]:
    """Convert ``200`` (quick: ``24``) 512x512 labelme files with 1 and 2 workers.

    Returns:
        ``{"convert_speedup_2_workers", "convert_images_per_s_1_worker",
        "convert_images_per_s_2_workers"}``.
    """
    from data_tools.phantom import generate_phantom_dataset

    num_images = 24 if quick else 200
    with tempfile.TemporaryDirectory(prefix="bench_convert_") as tmp:
        work = pathlib.Path(tmp)
        generate_phantom_dataset(work / "labelme", num_images=num_images, size=512, seed=0)
        rates = {}
        for workers in (1, 2):
            result = _convert_in_fresh_process(work / "labelme", work / f"records_w{workers}", workers)
            assert result["n"] == num_images, result
            seconds = result["seconds"]
            rates[workers] = num_images / seconds
            print(
                f"workers={workers}: {num_images} images in {seconds:.2f} s = {rates[workers]:.1f} images/s "
                f"(of which TensorFlow import {result['tf_import']:.1f} s)"
            )
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
