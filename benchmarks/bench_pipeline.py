"""Does the tf.data pipeline keep up with training?

Two ratios, each measured within this one run (the machine is shared and
noisy, so absolute times mean little):

* ``pipeline_vs_memory``: U-Net (base 32 filters, 256x256, batch 8) training
  images/s fed by :func:`kerasseg.data.load_dataset` from TFRecords (decode,
  foreground-biased 256x256 random crops of the 512x512 slices, full
  augmentation with elastic deformation) divided by the same training fed from
  tensors already in memory. Goal >= 0.95. Memory-fed and record-fed rounds
  alternate so machine load drifts hit both alike.
* ``pipeline_vs_training_ratio``: the pipeline alone (decode + full
  augmentation of 512x512 grayscale records, batch 8) images/s divided by the
  memory-fed training images/s. Goal >= 10.

Data: the ISBI 2012 membrane slices from ``../shared/data`` when present
(30 x 512x512 grayscale), else synthetic 512x512 slices of the same kind.

Run: ``python benchmarks/bench_pipeline.py [--quick]``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pathlib
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SHARED = pathlib.Path(os.environ.get("KERASSEG_SHARED_DATA", REPO.parent / "shared" / "data"))
ISBI = SHARED / "isbi2012_membrane" / "data" / "membrane" / "train"

FULL_AUGMENT = {"preset": "full", "elastic": 0.5}
BATCH = 8
SIZE = 256


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def _pairs(count: int) -> tuple[list[tuple[np.ndarray, np.ndarray]], str]:
    from PIL import Image

    if (ISBI / "image").is_dir():
        pairs = []
        for i in range(count):
            image = np.asarray(Image.open(ISBI / "image" / f"{i % 30}.png").convert("L"))
            label = np.asarray(Image.open(ISBI / "label" / f"{i % 30}.png").convert("L"))
            pairs.append((image, (label < 128).astype(np.uint8)))  # membrane (dark) = class 1
        return pairs, "ISBI 2012 membrane slices"
    rng = np.random.default_rng(0)
    pairs = []
    for _ in range(count):
        mask = np.zeros((512, 512), np.uint8)
        for _ in range(40):
            y, x = rng.integers(0, 500, size=2)
            mask[y : y + 4, max(0, x - 40) : x + 40] = 1
        image = np.clip(180 - 120 * mask + rng.normal(0, 20, mask.shape), 0, 255).astype(np.uint8)
        pairs.append((image, mask))
    return pairs, "synthetic 512x512 slices (../shared/data absent)"


def _write_records(out_dir: pathlib.Path, pairs) -> str:
    import tensorflow as tf

    from kerasseg import schema

    out_dir.mkdir(parents=True, exist_ok=True)
    counts = np.zeros(2, np.int64)
    with tf.io.TFRecordWriter(str(out_dir / schema.shard_filename("train", 0, 1))) as writer:
        for i, (image, mask) in enumerate(pairs):
            writer.write(schema.encode_example(
                image_bytes=_png(image), image_format="png", height=512, width=512, channels=1,
                mask_png=_png(mask), filename=f"{i}.png", source_id=str(i),
            ))
            counts += np.bincount(mask.ravel(), minlength=2)[:2]
    pixels = np.stack([p[0] for p in pairs]).astype(np.float64)
    info = schema.DatasetInfo(
        class_names=["background", "membrane"], splits={"train": len(pairs)}, shards={"train": 1},
        class_pixel_counts={"train": counts.tolist()},
        intensity={"mean": [pixels.mean()], "std": [pixels.std()], "min": [pixels.min()], "max": [pixels.max()],
                   "dtype": "uint8"},
    )
    schema.write_dataset_info(str(out_dir), info)
    return str(out_dir)


def _build_unet(size: int, base_filters: int):
    import keras

    from kerasseg import models

    model = models.build("unet", input_shape=(size, size, 1), num_classes=2, base_filters=base_filters)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.SparseCategoricalCrossentropy())
    return model


class _StepClock:
    """Keras callback: wall time from the end of the first batch to the end of the last."""

    def __init__(self):
        import keras

        class _CB(keras.callbacks.Callback):
            def __init__(cb):
                super().__init__()
                cb.stamps = []

            def on_train_batch_end(cb, batch, logs=None):
                cb.stamps.append(time.perf_counter())

        self.callback = _CB()

    def images_per_s(self) -> float:
        stamps = self.callback.stamps
        return BATCH * (len(stamps) - 1) / (stamps[-1] - stamps[0])


def _train_rate(model, ds, steps: int) -> float:
    clock = _StepClock()
    model.fit(ds, steps_per_epoch=steps + 1, epochs=1, verbose=0, shuffle=False, callbacks=[clock.callback])
    return clock.images_per_s()


def _pipeline_rate(ds, batches: int) -> float:
    it = iter(ds)
    next(it)  # start-up: threads, autotuning
    next(it)
    start = time.perf_counter()
    for _ in range(batches):
        images, _, _ = next(it)
    _ = images.numpy()
    return BATCH * batches / (time.perf_counter() - start)


def run(quick: bool = False) -> dict[str, float]:
    """Measure both ratios; returns the figures (keys in benchmarks/README.md)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from kerasseg.data import load_dataset

    # quick: a U-Net of base 16 (4x fewer FLOPs) and fewer steps, so `make bench-quick` stays short;
    # the model is still heavy enough that the ratios mean something
    size, base_filters = (SIZE, 16) if quick else (SIZE, 32)
    steps = 2 if quick else 6
    rounds = 1 if quick else 2
    pipeline_batches = 4 if quick else 30
    pairs, source = _pairs(16 if quick else 30)
    with tempfile.TemporaryDirectory(prefix="bench_pipeline_") as tmp:
        path = _write_records(pathlib.Path(tmp) / "records", pairs)

        # (b) the pipeline alone: decode + full augmentation at 512x512, no cache
        pipe512 = load_dataset(path, "train", image_size=(512, 512), batch_size=BATCH, augment=FULL_AUGMENT,
                               shuffle=True, repeat=True, seed=0)
        pipeline_ips = _pipeline_rate(pipe512, pipeline_batches)

        # (a) training from records (random 256 crops + full augmentation) vs from memory
        records = load_dataset(path, "train", image_size=(size, size), batch_size=BATCH, geometry="random_crop",
                               augment=FULL_AUGMENT, shuffle=True, repeat=True, seed=0, drop_remainder=True)
        plain = load_dataset(path, "train", image_size=(size, size), batch_size=BATCH, geometry="random_crop",
                             repeat=True, seed=1, drop_remainder=True)
        x, y, w = (np.concatenate(parts) for parts in zip(*[
            tuple(t.numpy() for t in b) for b in plain.take(4)
        ]))
        memory = (tf.data.Dataset.from_tensor_slices((x, y, w)).repeat().batch(BATCH, drop_remainder=True)
                  .prefetch(tf.data.AUTOTUNE))

        model = _build_unet(size, base_filters)
        model.fit(memory, steps_per_epoch=2, epochs=1, verbose=0, shuffle=False)  # trace + warm up
        model.fit(records, steps_per_epoch=2, epochs=1, verbose=0, shuffle=False)
        mem_rates, rec_rates = [], []
        for _ in range(rounds):
            mem_rates.append(_train_rate(model, memory, steps))
            rec_rates.append(_train_rate(model, records, steps))
        train_mem = float(np.mean(mem_rates))
        train_rec = float(np.mean(rec_rates))

    results = {
        "pipeline_vs_memory": train_rec / train_mem,
        "pipeline_images_per_s": pipeline_ips,
        "pipeline_vs_training_ratio": pipeline_ips / train_mem,
        "train_images_per_s_memory": train_mem,
        "train_images_per_s_records": train_rec,
    }
    print(f"data: {source}; U-Net base {base_filters}, {size}x{size}, batch {BATCH}; augmentation {FULL_AUGMENT}"
          + (" (quick: toy size)" if quick else ""))
    print(f"training from memory   : {train_mem:8.2f} images/s  (rounds: {', '.join(f'{r:.2f}' for r in mem_rates)})")
    print(f"training from records  : {train_rec:8.2f} images/s  (rounds: {', '.join(f'{r:.2f}' for r in rec_rates)})")
    print(f"  pipeline_vs_memory          = {results['pipeline_vs_memory']:.3f}  (goal >= 0.95)")
    print(f"pipeline alone 512x512 : {pipeline_ips:8.2f} images/s (decode + full augmentation)")
    print(f"  pipeline_vs_training_ratio  = {results['pipeline_vs_training_ratio']:.1f}  (goal >= 10)")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller U-Net (base 16), fewer steps")
    args = parser.parse_args(argv)
    print(json.dumps(run(quick=args.quick), indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
