"""Permutohedral-lattice Gaussian filtering written with TensorFlow ops.

The lattice of Adams, Baek & Davis (Eurographics 2010) approximates the
high-dimensional Gaussian filter

    out_i = sum_j exp(-|f_i - f_j|^2 / 2) * in_j

in three steps: *splat* every point onto the d+1 vertices of the enclosing
simplex of the permutohedral lattice (barycentric weights), *blur* the lattice
with a [1/2, 1, 1/2] stencil along each of its d+1 axes, and *slice* back with the
same barycentric weights.  The construction below follows the one used by the
dense-CRF reference (Kraehenbuehl & Koltun's code, wrapped by ``pydensecrf``):
the same feature scaling, the same rounding to the closest remainder-0 point,
the same neighbour definition and the same slicing constant, so that the
filtered values agree with the reference to float32 round-off.

Everything is vectorized over points and works with dynamic numbers of points.
Several independent lattices (one per image in a batch) are built in one pass
by giving every point a ``group`` id that becomes part of the lattice key, so
points of different images never share a vertex.

Shapes: ``features`` is ``(P, d)`` float32 (already divided by the kernel
standard deviations), ``group`` is ``(P,)`` int, values are channel-major
``(C, P)`` (C filtered signals).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import tensorflow as tf


class Lattice(NamedTuple):
    """A built lattice: everything needed to filter values on the points.

    Attributes:
        vertex: ``(P, d+1)`` int32, lattice vertex of each simplex corner.
        weight: ``(P, d+1)`` float32, barycentric weight of each corner.
        neighbours: ``(d+1, 2, M)`` int32, the two blur neighbours of each
            vertex along each lattice axis; ``M`` (one past the last vertex)
            marks a missing neighbour, which reads as zero.
        num_vertices: scalar int32 ``M``.
        dim: static feature dimension ``d``.
    """

    vertex: tf.Tensor
    weight: tf.Tensor
    neighbours: tf.Tensor
    num_vertices: tf.Tensor
    dim: int


def _elevate(features: tf.Tensor, d: int) -> tf.Tensor:
    """Embed ``(P, d)`` features in the hyperplane ``sum(x) = 0`` of R^(d+1)."""
    inv_std_dev = math.sqrt(2.0 / 3.0) * (d + 1)
    scaled = [
        features[:, i] * tf.constant(inv_std_dev / math.sqrt((i + 1) * (i + 2)), tf.float32)
        for i in range(d)
    ]
    elevated = [None] * (d + 1)
    running = tf.zeros_like(scaled[0])
    # Accumulate from the last coordinate down, like the reference, so the
    # float32 round-off (and hence any rounding tie below) is the same.
    for j in range(d, 0, -1):
        cf = scaled[j - 1]
        elevated[j] = running - float(j) * cf
        running = running + cf
    elevated[0] = running
    return tf.stack(elevated, axis=1)


# Largest key space (cells) indexed with a dense occupancy table (64 MiB of int32).
DENSE_TABLE_LIMIT = 1 << 24


def _index_dense(packed: tf.Tensor, deltas: tf.Tensor, span: tf.Tensor, d1: int):
    """Vertex ids by a dense occupancy table over all ``span`` possible keys."""
    keys = tf.cast(packed, tf.int32)
    # (the float-weighted bincount kernel is the faster one on CPU)
    occupied = tf.math.bincount(keys, weights=tf.ones_like(keys, tf.float32), minlength=span, maxlength=span) > 0
    compact = tf.cumsum(tf.cast(occupied, tf.int32)) - 1  # id of each occupied key
    num_vertices = compact[-1] + 1
    vertex_keys = tf.cast(tf.reshape(tf.where(occupied), [-1]), tf.int32)  # (M,) sorted
    probe = tf.stack(
        [vertex_keys[None, :] + tf.cast(deltas, tf.int32)[:, None],
         vertex_keys[None, :] - tf.cast(deltas, tf.int32)[:, None]],
        axis=1,
    )  # (d+1, 2, M); always inside [0, span) thanks to the key padding
    nb = tf.where(tf.gather(occupied, probe), tf.gather(compact, probe), num_vertices)
    return tf.gather(compact, keys), nb, num_vertices


def _index_hashed(packed: tf.Tensor, deltas: tf.Tensor, d1: int):
    """Vertex ids by hashing (tf.unique) and neighbour search in the sorted keys."""
    unique_keys, vertex = tf.unique(packed, out_idx=tf.int32)
    num_vertices = tf.shape(unique_keys)[0]
    order = tf.argsort(unique_keys)
    sorted_keys = tf.gather(unique_keys, order)
    probe = tf.stack(
        [unique_keys[None, :] + deltas[:, None], unique_keys[None, :] - deltas[:, None]], axis=1
    )  # (d+1, 2, M)
    probe_flat = tf.reshape(probe, [-1])
    pos = tf.searchsorted(sorted_keys, probe_flat, side="left", out_type=tf.int32)
    pos_c = tf.minimum(pos, num_vertices - 1)
    found = tf.equal(tf.gather(sorted_keys, pos_c), probe_flat)
    nb = tf.where(found, tf.gather(order, pos_c), num_vertices)
    return vertex, tf.reshape(nb, [d1, 2, -1]), num_vertices


def _corners(features: tf.Tensor):
    """Enclosing simplex of every point, element-wise work only.

    Returns barycentric weights ``(P, d+1)`` float32 and the lattice keys
    ``(P, d+1, d)`` int32 of the simplex corners.
    """
    d = features.shape[-1]
    d1 = d + 1
    elevated = _elevate(features, d)  # (P, d+1)

    # Closest remainder-0 lattice point, coordinate-wise.
    down = 1.0 / d1
    v = elevated * down
    up_pt = tf.math.ceil(v) * float(d1)
    down_pt = tf.math.floor(v) * float(d1)
    rem0_f = tf.where(up_pt - elevated < elevated - down_pt, up_pt, down_pt)
    rem0 = tf.cast(rem0_f, tf.int32)
    total = tf.reduce_sum(rem0, axis=1, keepdims=True) // d1  # exact: multiples of d1

    # Rank of each coordinate of the residual (ties broken like the reference).
    diff = elevated - rem0_f
    cols = [diff[:, i] for i in range(d1)]
    ranks = [tf.zeros_like(rem0[:, 0]) for _ in range(d1)]
    for i in range(d1):
        for j in range(i + 1, d1):
            i_smaller = tf.cast(cols[i] < cols[j], tf.int32)
            ranks[i] = ranks[i] + i_smaller
            ranks[j] = ranks[j] + (1 - i_smaller)
    rank = tf.stack(ranks, axis=1)  # (P, d+1), a permutation of 0..d per point

    # Fix points whose coordinates do not sum to zero.
    too_many = total > 0
    too_few = total < 0
    lower_it = too_many & (rank >= d1 - total)
    raise_it = too_few & (rank < -total)
    rem0 = tf.where(lower_it, rem0 - d1, tf.where(raise_it, rem0 + d1, rem0))
    rank = tf.where(
        lower_it,
        rank + total - d1,
        tf.where(raise_it, rank + d1 + total, rank + total),
    )

    # Barycentric coordinates.
    resid = (elevated - tf.cast(rem0, tf.float32)) * down  # (P, d+1)
    # (a masked sum rather than an einsum: XLA on CPU turns the einsum into
    # P tiny matrix products, the masked sum fuses with everything else)
    is_rank = tf.equal(rank[:, :, None], tf.range(d1)[None, None, :])  # (P, i, r)
    by_rank = tf.reduce_sum(tf.where(is_rank, resid[:, :, None], 0.0), axis=1)
    # by_rank[:, r] is the residual of the coordinate with rank r.
    weights = [by_rank[:, d] + (1.0 - by_rank[:, 0])]
    for k in range(1, d1):
        weights.append(by_rank[:, d - k] - by_rank[:, d - k + 1])
    weight = tf.stack(weights, axis=1)  # (P, d+1)

    # Keys of the d+1 simplex corners: corner k adds k to coordinates with
    # rank <= d-k and k-(d+1) to the others.  Only the first d coordinates
    # are needed (they sum to zero).
    ks = tf.range(d1)[None, :, None]  # (1, d+1 corners, 1)
    r = rank[:, None, :d]  # (P, 1, d)
    canonical = tf.where(r <= d - ks, ks, ks - d1)
    keys = rem0[:, None, :d] + canonical  # (P, d+1, d) int32
    return weight, keys


def _pack(keys: tf.Tensor, group: tf.Tensor):
    """Packed int64 keys ``(P*(d+1),)``, key-space size and neighbour offsets.

    A separate XLA computation from :func:`_corners`: fused together, XLA
    recomputes the element-wise producers inside each reduction.
    """
    d = keys.shape[-1]
    d1 = d + 1

    # Pack keys (plus the group id) into one int64 with a mixed radix that
    # leaves room for the +-(d+1) neighbour offsets without carries.
    flat = tf.reshape(keys, [-1, d])
    lo = tf.reduce_min(flat, axis=0) - d1
    hi = tf.reduce_max(flat, axis=0) + d1
    radix = tf.cast(hi - lo + 1, tf.int64)
    strides = [tf.constant(1, tf.int64)]
    for i in range(d - 1):
        strides.append(strides[-1] * radix[i])
    group_stride = strides[-1] * radix[d - 1]
    stride_vec = tf.stack(strides)  # (d,)
    packed = tf.reduce_sum(tf.cast(flat - lo, tf.int64) * stride_vec[None], axis=1)
    g = tf.repeat(tf.cast(group, tf.int64), d1)
    packed = packed + g * group_stride
    num_groups = tf.cast(tf.reduce_max(group) + 1, tf.float64)
    span = tf.reduce_prod(tf.cast(radix, tf.float64)) * num_groups

    # Neighbours along each lattice axis j: all coordinates -1 except +d on j
    # (and the opposite), axis d being "all coordinates -1" / "+1".
    all_minus = -tf.reduce_sum(stride_vec)
    deltas = tf.stack(
        [all_minus + (d1 * stride_vec[j] if j < d else tf.constant(0, tf.int64)) for j in range(d1)]
    )  # (d+1,)

    return packed, span, deltas


_XLA_FNS: dict = {}


def _simplex(features: tf.Tensor, group: tf.Tensor):
    """Barycentric weights ``(P, d+1)``, packed int64 corner keys
    ``(P*(d+1),)``, the key-space size ``span`` (float64) and the packed
    offsets ``(d+1,)`` of the blur neighbours."""
    weight, keys = _corners(features)
    return (weight,) + tuple(_pack(keys, group))


def _simplex_fn(d: int, xla: bool):
    """``_simplex``, its two parts compiled with XLA when ``xla`` (fused
    kernels instead of ~60 small ops; 2-4x faster on CPU).

    Only this element-wise part is compiled: its output shapes follow from the
    input's, so XLA handles any number of points (it compiles once per new
    point count, i.e. per new image size).
    """
    if not xla:
        return _simplex
    if not _XLA_FNS:
        _XLA_FNS["corners"] = tf.function(_corners, jit_compile=True, autograph=False)
        _XLA_FNS["pack"] = tf.function(_pack, jit_compile=True, autograph=False)

    def simplex(features, group):
        weight, keys = _XLA_FNS["corners"](features)
        return (weight,) + tuple(_XLA_FNS["pack"](keys, group))

    return simplex


def build_lattice(features: tf.Tensor, group: tf.Tensor | None = None, *, xla: bool = True) -> Lattice:
    """Build the permutohedral lattice of ``features``.

    Args:
        features: ``(P, d)`` float32 positions in feature space, already
            divided by the kernel standard deviations (``d`` must be static).
        group: optional ``(P,)`` integer id; points with different ids never
            interact (used to filter a batch of images at once).
        xla: compile the element-wise simplex computation with XLA.

    Returns:
        A :class:`Lattice`.
    """
    features = tf.convert_to_tensor(features, tf.float32)
    d = features.shape[-1]
    if d is None or d < 1:
        raise ValueError(f"build_lattice needs a static feature dimension >= 1, got {features.shape}")
    d1 = d + 1
    num_points = tf.shape(features)[0]

    if group is None:
        group = tf.zeros([num_points], tf.int32)
    weight, packed, span, deltas = _simplex_fn(d, xla)(features, tf.cast(group, tf.int32))
    tf.debugging.assert_less(
        span,
        tf.constant(2.0**62, tf.float64),
        message="permutohedral lattice keys overflow int64: the features span too large a range",
    )

    # Index the occupied vertices.  When the key space is small enough (the
    # usual case for image features) a dense occupancy table does it in linear
    # time without hashing or sorting; otherwise fall back to tf.unique.
    vertex, neighbours, num_vertices = tf.cond(
        span <= float(DENSE_TABLE_LIMIT),
        lambda: _index_dense(packed, deltas, tf.cast(span, tf.int32), d1),
        lambda: _index_hashed(packed, deltas, d1),
    )
    return Lattice(
        vertex=tf.reshape(vertex, [num_points, d1]),
        weight=weight,
        neighbours=neighbours,
        num_vertices=num_vertices,
        dim=d,
    )


def _slots(index: tf.Tensor, channels, size) -> tf.Tensor:
    """Flat slots of ``index`` ``(P, k)`` in a channel-major ``(C, size)`` table -> ``(C, P, k)``."""
    if isinstance(channels, int) and channels == 1:
        return index[None]
    return index[None] + (tf.range(channels) * size)[:, None, None]


def scatter_add(index: tf.Tensor, weight: tf.Tensor, values: tf.Tensor, size) -> tf.Tensor:
    """``out[c, index[p, k]] += weight[p, k] * values[c, p]``: ``(C, P)`` -> ``(C, size)``.

    bincount with weights is a fast unordered scatter-add on CPU (much faster
    than unsorted_segment_sum) but has no gradient: callers wrap it in a
    custom gradient.
    """
    channels = values.shape[0] if values.shape[0] is not None else tf.shape(values)[0]
    contrib = weight[None] * values[:, :, None]  # (C, P, k)
    total = size * channels
    out = tf.math.bincount(
        tf.reshape(_slots(index, channels, size), [-1]), weights=tf.reshape(contrib, [-1]),
        minlength=total, maxlength=total, dtype=tf.float32,
    )
    return tf.reshape(out, [channels, size])


def gather_interpolate(table: tf.Tensor, index: tf.Tensor, weight: tf.Tensor) -> tf.Tensor:
    """``out[c, p] = sum_k weight[p, k] * table[c, index[p, k]]``: ``(C, size)`` -> ``(C, P)``."""
    channels = table.shape[0] if table.shape[0] is not None else tf.shape(table)[0]
    size = tf.shape(table)[1]
    # A 1-D gather of scalars is several times faster than gathering rows.
    gathered = tf.gather(tf.reshape(table, [-1]), _slots(index, channels, size))  # (C, P, k)
    return tf.reduce_sum(weight[None] * gathered, axis=2)


def blur(lattice: Lattice, grid: tf.Tensor, reverse: bool = False) -> tf.Tensor:
    """[1/2, 1, 1/2] along every lattice axis of ``(C, M)``; ``reverse`` runs the axes backwards."""
    zero_col = tf.zeros([tf.shape(grid)[0], 1], grid.dtype)
    axes = range(lattice.dim, -1, -1) if reverse else range(lattice.dim + 1)
    for j in axes:
        padded = tf.concat([grid, zero_col], axis=1)
        grid = grid + 0.5 * (
            tf.gather(padded, lattice.neighbours[j, 0], axis=1) + tf.gather(padded, lattice.neighbours[j, 1], axis=1)
        )
    return grid


def _apply(lattice: Lattice, values: tf.Tensor, reverse: bool) -> tf.Tensor:
    alpha = 1.0 / (1.0 + 2.0 ** (-lattice.dim))
    grid = scatter_add(lattice.vertex, lattice.weight, values, lattice.num_vertices)
    grid = blur(lattice, grid, reverse)
    return alpha * gather_interpolate(grid, lattice.vertex, lattice.weight)


def lattice_filter(lattice: Lattice, values: tf.Tensor) -> tf.Tensor:
    """Approximate Gaussian filtering of channel-major ``values`` ``(C, P)`` -> ``(C, P)``.

    Includes every point's own contribution (the kernel's diagonal), like the
    reference implementation.  Differentiable with respect to ``values``: the
    filter is linear, its transpose is the same filter with the blur axes in
    reverse order (splat and slice are transposes of each other and each
    axis' blur is symmetric).
    """
    values = tf.convert_to_tensor(values, tf.float32)

    @tf.custom_gradient
    def _filter(v):
        def grad(upstream):
            return _apply(lattice, upstream, reverse=True)

        return _apply(lattice, v, reverse=False), grad

    return _filter(values)
