"""Model zoo benchmark: parameters, forward GFLOPs at 256x256, CPU inference and training images/s.

FLOPs are counted by TensorFlow's own graph profiler
(``tf.compat.v1.profiler`` with ``float_operation()``) on the frozen concrete
forward function at batch 1; a multiply-add counts as 2 FLOPs. Per model
(stated configuration: the paper's network, 3 input channels except U-Nets'
1, 2 classes; the 3D U-Net on a 64^3 volume):

* ``params_<model>``, ``gflops_<model>`` (forward, one image),
* ``infer_images_per_s_<model>`` (``model(x, training=False)`` compiled with
  ``tf.function``, batch 2, CPU),
* ``train_images_per_s_<model>`` (``train_on_batch``, batch 2, Adam).

Plus ``unet_forward_gflops_256`` (U-Net base 32, 256x256x1),
``matmul_gflops`` (dense float32 2048x2048 matmul FLOP/s, this process) and
``train_efficiency`` = U-Net (base 32, 256x256, batch 8) training FLOP/s
(forward FLOPs x 3 x images/s) / matmul FLOP/s.

Run: ``python benchmarks/bench_models.py [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# model -> (kwargs, input shape) : the configuration stated in the table
CONFIGS: dict[str, tuple[dict, tuple]] = {
    "unet": (dict(), (256, 256, 1)),
    "attention_unet": (dict(), (256, 256, 1)),
    "unet3d": (dict(), (64, 64, 64, 1)),
    "attention_unet3d": (dict(), (64, 64, 64, 1)),
    "deeplabv3plus": (dict(backbone="resnet50", output_stride=16), (256, 256, 3)),
    "segnet": (dict(), (256, 256, 3)),
    "fcn8s": (dict(), (256, 256, 3)),
    "pspnet": (dict(backbone="resnet50", output_stride=8), (256, 256, 3)),
}
QUICK_CONFIGS: dict[str, tuple[dict, tuple]] = {
    "unet": (dict(base_filters=16), (256, 256, 1)),
    "attention_unet": (dict(base_filters=16), (256, 256, 1)),
    "unet3d": (dict(base_filters=8), (32, 32, 32, 1)),
    "attention_unet3d": (dict(base_filters=8), (32, 32, 32, 1)),
    "deeplabv3plus": (dict(backbone="mobilenetv2", alpha=0.35), (256, 256, 3)),
    "segnet": (dict(base_filters=16), (256, 256, 3)),
    "fcn8s": (dict(base_filters=16, fc_filters=256), (256, 256, 3)),
    "pspnet": (dict(backbone="mobilenetv2", alpha=0.35), (256, 256, 3)),
}
CONFIG_TEXT = {
    "unet": "paper (64 filters, depth 4, 1 ch in)",
    "attention_unet": "64 filters, depth 4, BN, 1 ch in",
    "unet3d": "paper (32 filters, depth 3, BN), 64^3 volume",
    "attention_unet3d": "3D U-Net above + 3 attention gates, 64^3 volume",
    "deeplabv3plus": "ResNet50, OS 16, ASPP 6/12/18",
    "segnet": "VGG16-BN encoder",
    "fcn8s": "VGG16, fc 4096",
    "pspnet": "ResNet50, OS 8, bins 1/2/3/6",
}


def forward_flops(model, input_shape) -> float:
    """Forward FLOPs of one image from TF's graph profiler (2 per multiply-add)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    fn = tf.function(lambda x: model(x, training=False))
    concrete = fn.get_concrete_function(tf.TensorSpec((1, *input_shape), tf.float32))
    frozen = convert_variables_to_constants_v2(concrete)
    with tf.Graph().as_default() as graph:
        tf.graph_util.import_graph_def(frozen.graph.as_graph_def(), name="")
        opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
        opts["output"] = "none"
        info = tf.compat.v1.profiler.profile(graph=graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op",
                                             options=opts)
    return float(info.total_float_ops)


def matmul_flops_per_s(seconds: float = 1.0, n: int = 2048) -> float:
    import tensorflow as tf

    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    mm = tf.function(lambda a, b: tf.matmul(a, b))
    mm(a, b).numpy()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        mm(a, b).numpy()
        count += 1
    return 2.0 * n**3 * count / (time.perf_counter() - start)


def _images_per_s(step, batch: int, min_iters: int, min_seconds: float) -> float:
    step()  # warm-up / tracing
    count, start = 0, time.perf_counter()
    while count < min_iters or time.perf_counter() - start < min_seconds:
        step()
        count += 1
    return batch * count / (time.perf_counter() - start)


def inference_images_per_s(model, input_shape, *, batch: int, iters: int, seconds: float) -> float:
    import numpy as np
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(0).random((batch, *input_shape), dtype=np.float32))
    fn = tf.function(lambda t: model(t, training=False))
    return _images_per_s(lambda: fn(x).numpy(), batch, iters, seconds)


def training_images_per_s(model, input_shape, *, batch: int, iters: int, seconds: float) -> float:
    import keras
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.random((batch, *input_shape), dtype=np.float32)
    y = rng.integers(0, 2, size=(batch, *input_shape[:-1])).astype("int32")
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy")
    return _images_per_s(lambda: model.train_on_batch(x, y), batch, iters, seconds)


def run(quick: bool = False) -> dict[str, float]:
    import keras

    import kerasseg.models as km

    configs = QUICK_CONFIGS if quick else CONFIGS
    iters, seconds, batch = (1, 0.5, 2) if quick else (2, 3.0, 2)
    results: dict[str, float] = {}
    for name in km.available():
        kwargs, shape = configs[name]
        keras.backend.clear_session()
        model = km.build(name, input_shape=shape, num_classes=2, **kwargs)
        results[f"params_{name}"] = float(model.count_params())
        results[f"gflops_{name}"] = forward_flops(model, shape) / 1e9
        results[f"infer_images_per_s_{name}"] = inference_images_per_s(model, shape, batch=batch, iters=iters,
                                                                       seconds=seconds)
        if not quick:  # a training step per model mostly measures tracing at toy size
            results[f"train_images_per_s_{name}"] = training_images_per_s(model, shape, batch=batch, iters=iters,
                                                                          seconds=seconds)
        print(f"  {name}: done", file=sys.stderr, flush=True)

    keras.backend.clear_session()
    unet_shape = (128, 128, 1) if quick else (256, 256, 1)
    unet = km.build("unet", input_shape=unet_shape, num_classes=2, base_filters=16 if quick else 32, norm="batch")
    unet_flops = forward_flops(unet, unet_shape)
    results["unet_forward_gflops_256"] = unet_flops / 1e9
    matmul = matmul_flops_per_s(0.5 if quick else 2.0)
    results["matmul_gflops"] = matmul / 1e9
    train_batch = 4 if quick else 8
    unet_train = training_images_per_s(unet, unet_shape, batch=train_batch, iters=1 if quick else 2,
                                       seconds=0.5 if quick else 4.0)
    results["unet_train_images_per_s_256_b8"] = unet_train
    results["train_efficiency"] = unet_flops * 3.0 * unet_train / matmul
    return results


def format_table(results: dict[str, float], quick: bool = False) -> str:
    import kerasseg.models as km

    configs = QUICK_CONFIGS if quick else CONFIGS
    lines = [
        "| model | paper | configuration | input | params (M) | forward GFLOPs | CPU infer img/s | CPU train img/s |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for name in km.available():
        kwargs, shape = configs[name]
        cfg = CONFIG_TEXT[name] if not quick else ", ".join(f"{k}={v}" for k, v in kwargs.items()) or "paper"
        lines.append(
            f"| {name} | {km.paper(name)} | {cfg} | {'x'.join(str(s) for s in shape)} "
            f"| {results[f'params_{name}'] / 1e6:.2f} | {results[f'gflops_{name}']:.1f} "
            f"| {results[f'infer_images_per_s_{name}']:.2f} | {results.get(f'train_images_per_s_{name}', float('nan')):.2f} |"
        )
    lines.append("")
    lines.append(
        f"U-Net (base 32, 256x256x1) forward {results['unet_forward_gflops_256']:.1f} GFLOPs; "
        f"training {results['unet_train_images_per_s_256_b8']:.2f} img/s at batch 8; dense matmul "
        f"{results['matmul_gflops']:.1f} GFLOP/s; train_efficiency = "
        f"{results['train_efficiency']:.3f} (training FLOP/s / matmul FLOP/s, same process)."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small configurations, few iterations")
    args = parser.parse_args(argv)
    results = run(quick=args.quick)
    print(format_table(results, quick=args.quick))
    for key, value in results.items():
        print(f"{key}: {value:.6g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
