"""Mean-field inference on two permutohedral lattices as one XLA computation.

The lattices are built outside (their vertex count is data-dependent, which
XLA cannot express).  Their neighbour tables are then padded to a bucketed
size (:func:`crf_permutohedral.bucket_size`), so that every array inside has a shape that
depends only on the image size and the bucket: XLA compiles once per image
size and vertex-count bucket, not once per image.  Inside, splat and blur
are segment sums and slice is a gather; XLA turns each into one tight loop,
several times faster on CPU than TensorFlow's kernels for these ops (whose
gather copies element by element).

The arithmetic is that of :func:`crf_permutohedral.lattice_filter` and the
symmetric normalization of :mod:`dense_crf`; the gradient with respect to the
unary is TensorFlow's automatic one (splat and slice are transposes of each
other, so it is the same filter with the blur axes in reverse order).
"""

from __future__ import annotations

import tensorflow as tf

from kerasseg.layers.crf_permutohedral import Lattice, bucket_size

_FN: dict = {}


def padded_neighbours(lattice: Lattice) -> tf.Tensor:
    """``(d+1, 2, S)`` blur neighbours over a table of ``S = bucket_size(M)``
    slots, ``-1`` where there is none (a missing neighbour, or a padding slot)."""
    size = bucket_size(lattice.num_vertices)
    nb = tf.where(lattice.neighbours >= lattice.num_vertices, -1, lattice.neighbours)
    return tf.pad(nb, [[0, 0], [0, 0], [0, size - lattice.num_vertices]], constant_values=-1)


def _filter(vertex: tf.Tensor, weight: tf.Tensor, neighbours: tf.Tensor, values: tf.Tensor) -> tf.Tensor:
    """Un-normalized lattice filter of channel-major ``(C, N)`` values.

    The blur is written as scatters (every vertex adds half its value to
    each neighbour; ids ``-1`` are dropped): as gathers, XLA fuses the blur
    steps into the slice and recomputes them for every corner.  (Sizes are
    read with ``tf.shape``: traced inside a caller's graph the static shapes
    may be unknown; XLA sees concrete ones.)
    """
    d = vertex.shape[1] - 1
    channels, size = tf.shape(values)[0], tf.shape(neighbours)[2]
    n = channels * size
    slots = vertex[None] + (tf.range(channels) * size)[:, None, None]  # (C, N, d+1)
    table = tf.math.unsorted_segment_sum(
        tf.reshape(weight[None] * values[:, :, None], [-1]), tf.reshape(slots, [-1]), n
    )  # (C*S,)
    offsets = (tf.range(channels) * size)[:, None]
    own = tf.range(n)
    for j in range(d + 1):
        ids = [own]
        for side in range(2):
            nb = neighbours[j, side][None]
            ids.append(tf.reshape(tf.where(nb < 0, -1, nb + offsets), [-1]))
        half = 0.5 * table
        table = tf.math.unsorted_segment_sum(tf.concat([table, half, half], 0), tf.concat(ids, 0), n)
    alpha = 1.0 / (1.0 + 2.0 ** (-d))
    return alpha * tf.reduce_sum(weight[None] * tf.gather(table, slots), axis=2)


def _mean_field(u, g_vertex, g_weight, g_neighbours, b_vertex, b_weight, b_neighbours, *,
                iterations: int, w_g: float, w_b: float):
    hw = tf.shape(g_vertex)[0]
    batch = tf.shape(u)[1] // hw
    g_weight = tf.stop_gradient(g_weight)
    b_weight = tf.stop_gradient(b_weight)

    def gauss(values):  # (C, B*HW): one smoothness lattice serves every image
        c = tf.shape(values)[0]
        out = _filter(g_vertex, g_weight, g_neighbours, tf.reshape(values, [c * batch, hw]))
        return tf.reshape(out, [c, batch * hw])

    def bilateral(values):
        return _filter(b_vertex, b_weight, b_neighbours, values)

    ones = tf.ones([1, batch * hw], tf.float32)
    norm_g = tf.math.rsqrt(gauss(ones) + 1e-20)
    norm_b = tf.math.rsqrt(bilateral(ones) + 1e-20)
    # Message of "all classes together" (the classes of Q sum to one): the
    # last class's message follows from the others'.
    total = w_g * norm_g * gauss(norm_g) + w_b * norm_b * bilateral(norm_b)

    def softmax0(x):
        e = tf.exp(x - tf.reduce_max(x, axis=0, keepdims=True))
        return e / tf.reduce_sum(e, axis=0, keepdims=True)

    q = softmax0(-u)
    for _ in range(iterations):
        head = q[:-1]
        msg = w_g * norm_g * gauss(norm_g * head) + w_b * norm_b * bilateral(norm_b * head)
        msg = tf.concat([msg, total - tf.reduce_sum(msg, axis=0, keepdims=True)], axis=0)
        q = softmax0(-u + msg)
    return q


def mean_field(unary: tf.Tensor, gauss: Lattice, bilateral: Lattice, *, iterations: int,
               gaussian_compat: float, bilateral_compat: float) -> tf.Tensor:
    """Mean field from channel-major unary energies ``(K, B*HW)`` -> ``Q`` ``(K, B*HW)``.

    ``gauss`` is the smoothness lattice of the ``HW`` pixel positions (shared by
    the images), ``bilateral`` the appearance lattice of all ``B*HW`` pixels.
    """
    if "fn" not in _FN:
        _FN["fn"] = tf.function(_mean_field, jit_compile=True, autograph=False)
    return _FN["fn"](
        unary, gauss.vertex, gauss.weight, padded_neighbours(gauss),
        bilateral.vertex, bilateral.weight, padded_neighbours(bilateral),
        iterations=int(iterations), w_g=float(gaussian_compat), w_b=float(bilateral_compat),
    )
