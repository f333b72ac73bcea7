"""labelme -> TFRecord conversion speed: ``--workers 2`` against ``--workers 1``, and against labelme.

Converts the same synthetic labelme folder (``data_tools.phantom``: 512x512
grayscale frames, polygon lesions, every 10th image embedded as imageData)
once per worker count, each in a fresh Python process as the
``labelme2tfrecord`` command runs. The time is the whole conversion as a user
waits for it after Python has started: source checks, worker start-up,
decoding, rasterizing and writing (the converters never import TensorFlow).
The two outputs are also compared byte for byte (records, dataset.json, split
lists).

Then, when labelme's reference converter is available, the ``labelme2tfrecord
--workers 2`` command and labelme's example ``labelme2voc.py`` (semantic
segmentation, masks only: ``--noviz --nonpy --noobject``, one process) convert
the same 200 and 1,000 files, each as a whole process timed from outside,
taking turns, best of ``ROUNDS``: ``convert_vs_labelme2voc_200`` and
``convert_vs_labelme2voc_1000`` are our files/s over theirs (> 1: ours faster).
The script is labelme's ``examples/semantic_segmentation/labelme2voc.py`` with
``examples/utils.py`` beside its folder, as in the labelme repository (7.x needs
only numpy, Pillow and imgviz); it is found under ``benchmarks/_work`` (e.g. a
copy of the repository's ``examples`` folder at
``benchmarks/_work/labelme-7.1.0/examples``) or given with ``--labelme2voc``,
and runs with ``--labelme-python`` (default: this Python). Without it those keys
are left out, saying why. Quick mode skips the comparison.

    python benchmarks/bench_convert.py [--quick] [--labelme2voc PATH] [--labelme-python PYTHON]
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import pathlib
import resource
import shutil
import subprocess
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


_CHILD = """
import json, sys
from data_tools import convert_labelme
report = convert_labelme(sys.argv[1], sys.argv[2], split="train=0.8,val=0.2", seed=0, shards=4,
                         workers=int(sys.argv[3]))
print(json.dumps({"n": report.num_examples, "seconds": report.seconds}))
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


def run(quick: bool = False, labelme2voc: str | None = None, labelme_python: str | None = None) -> dict[str, float]:
    """Convert ``200`` (quick: ``24``) 512x512 labelme files with 1 and 2 workers; then
    (not quick) 200 and 1,000 files with ``labelme2tfrecord --workers 2`` and labelme's ``labelme2voc.py``.

    Args:
        quick: toy size, no labelme comparison.
        labelme2voc: labelme's ``examples/semantic_segmentation/labelme2voc.py``
            (default: found under ``benchmarks/_work``).
        labelme_python: the Python that runs it (default: this one).

    Returns:
        ``{"convert_speedup_2_workers", "convert_images_per_s_1_worker",
        "convert_images_per_s_2_workers"}``, plus ``convert_vs_labelme2voc_200``
        and ``convert_vs_labelme2voc_1000`` when the reference ran.
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
            print(f"workers={workers}: {num_images} images in {seconds:.2f} s = {rates[workers]:.1f} images/s")
        same = _identical(work / "records_w1", work / "records_w2")
        print(f"outputs byte-identical across worker counts: {same}")
        if not same:
            raise AssertionError("workers=1 and workers=2 wrote different records")
        ratio = rates[2] / rates[1]
        print(f"convert_speedup_2_workers = {ratio:.2f} (images/s with 2 workers / 1 worker, {os.cpu_count()} CPUs)")
        results = {
            "convert_speedup_2_workers": round(ratio, 3),
            "convert_images_per_s_1_worker": round(rates[1], 2),
            "convert_images_per_s_2_workers": round(rates[2], 2),
        }
        if quick:
            print("labelme2voc comparison: skipped in quick mode")
            return results
        results.update(compare_with_labelme2voc(work, labelme2voc, labelme_python))
    return results


ROUNDS = 3
"""Timed runs of each converter at each size (taking turns); the fastest of each counts."""
COMPARISON_SIZES = (200, 1000)


def find_labelme2voc() -> pathlib.Path | None:
    """labelme's ``examples/semantic_segmentation/labelme2voc.py`` under ``benchmarks/_work``, if any."""
    found = sorted((ROOT / "benchmarks" / "_work").glob("**/examples/semantic_segmentation/labelme2voc.py"))
    return found[-1] if found else None


def compare_with_labelme2voc(work: pathlib.Path, labelme2voc: str | os.PathLike | None = None,
                             labelme_python: str | None = None,
                             sizes: tuple[int, ...] = COMPARISON_SIZES, rounds: int = ROUNDS) -> dict[str, float]:
    """``convert_vs_labelme2voc_<n>`` for each size: our files/s over labelme2voc's (> 1: ours faster).

    Both run as whole processes on the same phantom files, timed from outside
    (start-up included), taking turns; the fastest of ``rounds`` runs counts.
    Returns ``{}`` (and says why) when the reference is missing or fails on a
    small folder.
    """
    from data_tools.phantom import generate_phantom_dataset

    script = pathlib.Path(labelme2voc) if labelme2voc else find_labelme2voc()
    python = labelme_python or sys.executable
    if script is None or not script.is_file():
        where = script or ROOT / "benchmarks" / "_work" / "**" / "examples" / "semantic_segmentation"
        print(f"labelme2voc comparison: skipped, labelme's labelme2voc.py is not available (looked for {where}); "
              "put labelme's examples folder under benchmarks/_work or pass --labelme2voc PATH "
              "(and --labelme-python PYTHON with its dependencies)")
        return {}
    source = work / "compare_source"
    generate_phantom_dataset(source, num_images=max(sizes), size=512, seed=0)
    folders = {n: _first_files(source, work / f"compare_{n}", n) for n in sizes}
    smoke = _first_files(source, work / "compare_smoke", 3)
    try:
        _run_labelme2voc(python, script, smoke, work / "smoke_voc")
    except RuntimeError as e:
        print(f"labelme2voc comparison: skipped, the reference failed on 3 files:\n{e}")
        return {}
    results = {}
    for n, folder in folders.items():
        ours, theirs = [], []
        for turn in range(rounds):
            first_ours = turn % 2 == 0  # alternate who goes first
            for which in ("ours", "theirs") if first_ours else ("theirs", "ours"):
                out = work / f"out_{which}_{n}"
                shutil.rmtree(out, ignore_errors=True)
                if which == "ours":
                    ours.append(_run_labelme2tfrecord(folder, out))
                else:
                    theirs.append(_run_labelme2voc(python, script, folder, out))
        (our_wall, our_cpu), (their_wall, their_cpu) = min(ours), min(theirs)
        ratio = their_wall / our_wall  # same files: (n / ours) / (n / theirs)
        print(f"{n} files: labelme2tfrecord --workers 2 {our_wall:.2f} s ({n / our_wall:.0f} files/s, "
              f"{our_cpu:.2f} CPU s), labelme2voc.py {their_wall:.2f} s ({n / their_wall:.0f} files/s, "
              f"{their_cpu:.2f} CPU s); convert_vs_labelme2voc_{n} = {ratio:.2f} "
              f"(runs: ours {[round(w, 2) for w, _ in ours]}, theirs {[round(w, 2) for w, _ in theirs]})")
        results[f"convert_vs_labelme2voc_{n}"] = round(ratio, 3)
    return results


def _first_files(source: pathlib.Path, folder: pathlib.Path, n: int) -> pathlib.Path:
    """A folder holding the first ``n`` phantom annotations of ``source`` (hard links) and labels.txt."""
    folder.mkdir()
    for json_path in sorted(source.glob("*.json"))[:n]:
        for path in (json_path, json_path.with_suffix(".png")):
            if path.exists():
                os.link(path, folder / path.name)
    shutil.copy(source / "labels.txt", folder / "labels.txt")
    return folder


def _timed(command: list[str], what: str, env: dict | None = None) -> tuple[float, float]:
    """``(wall seconds, CPU seconds of the process and everything it waited for)`` of ``command``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return seconds, cpu


def _run_labelme2tfrecord(folder: pathlib.Path, out: pathlib.Path) -> tuple[float, float]:
    """Wall and CPU seconds of ``labelme2tfrecord FOLDER OUT --workers 2`` as a user runs it (this checkout's code)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    entry = "import sys; from data_tools.cli import labelme2tfrecord_main; sys.exit(labelme2tfrecord_main())"
    return _timed([sys.executable, "-c", entry, str(folder), str(out), "--workers", "2", "--no-progress"],
                  "labelme2tfrecord", env)


def _run_labelme2voc(python: str, script: pathlib.Path, folder: pathlib.Path, out: pathlib.Path) -> tuple[float, float]:
    """Wall and CPU seconds of labelme's ``labelme2voc.py FOLDER OUT --labels labels.txt --noviz --nonpy --noobject``."""
    command = [python, str(script), str(folder), str(out), "--labels", str(folder / "labels.txt"),
               "--noviz", "--nonpy", "--noobject"]
    return _timed(command, "labelme2voc.py")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="24 images instead of 200, no labelme comparison")
    parser.add_argument("--labelme2voc", default=None, metavar="PATH",
                        help="labelme's examples/semantic_segmentation/labelme2voc.py "
                        "(default: found under benchmarks/_work)")
    parser.add_argument("--labelme-python", default=None, metavar="PYTHON",
                        help="the Python with labelme2voc.py's dependencies (default: this one)")
    args = parser.parse_args(argv)
    print(run(quick=args.quick, labelme2voc=args.labelme2voc, labelme_python=args.labelme_python))
    return 0


if __name__ == "__main__":
    sys.exit(main())
