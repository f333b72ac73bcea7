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


def _elevate(features: tf.Tensor, d: int) -> list[tf.Tensor]:
    """Embed ``(P, d)`` features in the hyperplane ``sum(x) = 0`` of R^(d+1): d+1 columns ``(P,)``."""
    inv_std_dev = math.sqrt(2.0 / 3.0) * (d + 1)
    scaled = [features[:, i] * (inv_std_dev / math.sqrt((i + 1) * (i + 2))) for i in range(d)]
    elevated = [None] * (d + 1)
    running = tf.zeros_like(scaled[0])
    # Accumulate from the last coordinate down, like the reference, so the
    # float32 round-off (and hence any rounding tie below) is the same.
    for j in range(d, 0, -1):
        cf = scaled[j - 1]
        elevated[j] = running - float(j) * cf
        running = running + cf
    elevated[0] = running
    return elevated


# Largest key-space table (cells) of the dense index (64 MiB of int32).
DENSE_TABLE_LIMIT = 1 << 24


def bucket_size(n: tf.Tensor) -> tf.Tensor:
    """``n`` rounded up to a power of two (at least 2), int32: table sizes
    inside XLA computations, so that compiled shapes repeat across images."""
    need = tf.maximum(tf.cast(n, tf.float64), 2.0)
    size = tf.cast(2.0 ** tf.math.ceil(tf.math.log(need) / tf.math.log(tf.constant(2.0, tf.float64))), tf.int32)
    return tf.where(tf.cast(size, tf.float64) < need, size * 2, size)  # guard against log round-off


def _neighbour_probes(vertex_keys: tf.Tensor, strides: tf.Tensor, radix: tf.Tensor, d1: int):
    """Packed keys ``(d+1, 2, M)`` of the two blur neighbours of every vertex
    along every lattice axis, and whether each lies inside the key space
    (one outside cannot be a vertex; its key is replaced by the vertex's own).

    Along axis ``j`` the neighbours are "all coordinates -1 except ``+d`` on
    ``j``" and the opposite (axis ``d``: all -1 / all +1).  In packed form
    (see :func:`_pack`) the first changes ``k`` by -1 and ``q_j`` by +1, the
    second ``k`` by +1 and ``q_j`` by -1 -- unless ``k`` wraps around (from 0
    to d, or from d to 0): then ``q_j`` stays and every other ``q_i`` moves
    by one instead.
    """
    dtype = vertex_keys.dtype
    d = d1 - 1
    strides = tf.cast(strides, dtype)
    radix = tf.cast(radix, dtype)
    keys = vertex_keys[None, :]
    k = tf.math.floormod(keys, d1)  # (1, M)
    digits = tf.math.floormod(tf.math.floordiv(keys, strides[:, None]), radix[:, None])  # (d, M)
    step = tf.concat([strides, tf.zeros([1], dtype)], 0)[:, None]  # (d+1, 1): axis d moves no digit alone
    others = tf.reduce_sum(strides) - step
    # Digits that cannot go down (up) by one; a wrap moves all but digit j.
    at_low = tf.concat([tf.cast(digits == 0, tf.int32), tf.zeros_like(k, tf.int32)], 0)  # (d+1, M)
    at_high = tf.concat([tf.cast(digits == radix[:, None] - 1, tf.int32), tf.zeros_like(k, tf.int32)], 0)
    low_elsewhere = tf.reduce_sum(at_low, 0, keepdims=True) - at_low > 0
    high_elsewhere = tf.reduce_sum(at_high, 0, keepdims=True) - at_high > 0
    minus_ok = tf.where(k == 0, ~low_elsewhere, at_high == 0)
    plus_ok = tf.where(k == d, ~high_elsewhere, at_low == 0)
    minus = keys + tf.where(k == 0, d - others, step - 1)
    plus = keys + tf.where(k == d, others - d, 1 - step)
    probe = tf.stack([tf.where(minus_ok, minus, keys), tf.where(plus_ok, plus, keys)], axis=1)
    return probe, tf.stack([minus_ok, plus_ok], axis=1)


def _occupancy(keys: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    """``(size,)`` bool: which keys occur."""
    # (the float-weighted bincount kernel is the faster one on CPU)
    return tf.math.bincount(keys, weights=tf.ones_like(keys, tf.float32), minlength=size, maxlength=size) > 0


def _occupancy_xla(keys: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    return tf.math.unsorted_segment_sum(tf.ones_like(keys, tf.float32), keys, size) > 0


def _index_fns(xla: bool):
    """The two passes of the dense index over all P*(d+1) corners: occupancy
    and id lookup.  With ``xla`` they are compiled (TensorFlow's bincount
    and gather are several times slower); ``size`` is then a compile-time
    constant, which is why the table is bucketed."""
    if not xla:
        return _occupancy, tf.gather
    if "occupancy" not in _XLA_FNS:
        _XLA_FNS["occupancy"] = tf.function(_occupancy_xla, jit_compile=True, autograph=False)
        _XLA_FNS["lookup"] = tf.function(tf.gather, jit_compile=True, autograph=False)
    return _XLA_FNS["occupancy"], _XLA_FNS["lookup"]


def _dense_size(span: tf.Tensor, xla: bool) -> tf.Tensor:
    """Table size of the dense index (``span``, bucketed with ``xla``), float64."""
    return tf.cast(bucket_size(span), tf.float64) if xla else span


def _index_dense(packed: tf.Tensor, strides: tf.Tensor, radix: tf.Tensor, size: tf.Tensor, d1: int, xla: bool):
    """Vertex ids by a dense table over all ``size`` (>= span) possible keys."""
    occupancy, lookup = _index_fns(xla)
    keys = tf.cast(packed, tf.int32)
    vertex_keys = tf.cast(tf.reshape(tf.where(occupancy(keys, size)), [-1]), tf.int32)  # (M,) sorted
    num_vertices = tf.shape(vertex_keys)[0]
    # id + 1 of the vertex with each key, 0 for a key without a vertex
    ids = tf.scatter_nd(vertex_keys[:, None], tf.range(1, num_vertices + 1), [size]) - 1
    probe, inside = _neighbour_probes(vertex_keys, strides, radix, d1)  # (d+1, 2, M), inside [0, span)
    nb = tf.gather(ids, probe)
    nb = tf.where(inside & (nb >= 0), nb, num_vertices)
    return lookup(ids, keys), nb, num_vertices


def _index_hashed(packed: tf.Tensor, strides: tf.Tensor, radix: tf.Tensor, d1: int):
    """Vertex ids by hashing (tf.unique) and neighbour search in the sorted keys."""
    unique_keys, vertex = tf.unique(packed, out_idx=tf.int32)
    num_vertices = tf.shape(unique_keys)[0]
    order = tf.argsort(unique_keys)
    sorted_keys = tf.gather(unique_keys, order)
    probe, inside = _neighbour_probes(unique_keys, strides, radix, d1)
    probe_flat = tf.reshape(probe, [-1])
    pos = tf.searchsorted(sorted_keys, probe_flat, side="left", out_type=tf.int32)
    pos_c = tf.minimum(pos, num_vertices - 1)
    found = tf.reshape(inside, [-1]) & tf.equal(tf.gather(sorted_keys, pos_c), probe_flat)
    nb = tf.where(found, tf.gather(order, pos_c), num_vertices)
    return vertex, tf.reshape(nb, [d1, 2, -1]), num_vertices


def _simplex(features: tf.Tensor):
    """Enclosing simplex of every point: element-wise work on ``(P,)`` columns.

    Returns three lists of columns ``(P,)``: the barycentric ``weights`` of
    the d+1 simplex corners (float32); ``m``, the remainder-0 corner's first d
    coordinates divided by d+1 (int32); ``rank``, the rank of each of those d
    coordinates' residual (int32).  Kept as columns, XLA computes each point's
    simplex once in one fused loop (stacked ``(P, d+1, d)`` tensors made it
    recompute the ranks for every element).
    """
    d = features.shape[-1]
    d1 = d + 1
    elevated = _elevate(features, d)

    # Closest remainder-0 lattice point, coordinate-wise.
    down = 1.0 / d1
    rem0_f = []
    for e in elevated:
        v = e * down
        up_pt = tf.math.ceil(v) * float(d1)
        down_pt = tf.math.floor(v) * float(d1)
        rem0_f.append(tf.where(up_pt - e < e - down_pt, up_pt, down_pt))
    rem0 = [tf.cast(r, tf.int32) for r in rem0_f]
    total = tf.add_n(rem0) // d1  # exact: multiples of d1

    # Rank of each coordinate of the residual (ties broken like the reference).
    diff = [e - r for e, r in zip(elevated, rem0_f)]
    rank = [tf.zeros_like(total) for _ in range(d1)]
    for i in range(d1):
        for j in range(i + 1, d1):
            i_smaller = tf.cast(diff[i] < diff[j], tf.int32)
            rank[i] = rank[i] + i_smaller
            rank[j] = rank[j] + (1 - i_smaller)

    # Fix points whose coordinates do not sum to zero.
    too_many = total > 0
    too_few = total < 0
    for i in range(d1):
        lower_it = too_many & (rank[i] >= d1 - total)
        raise_it = too_few & (rank[i] < -total)
        rem0[i] = tf.where(lower_it, rem0[i] - d1, tf.where(raise_it, rem0[i] + d1, rem0[i]))
        rank[i] = tf.where(lower_it, rank[i] + total - d1, tf.where(raise_it, rank[i] + d1 + total, rank[i] + total))

    # Barycentric coordinates; by_rank[r] is the residual of the coordinate with rank r.
    resid = [(e - tf.cast(r, tf.float32)) * down for e, r in zip(elevated, rem0)]
    by_rank = [tf.add_n([tf.where(tf.equal(rank[i], r), resid[i], 0.0) for i in range(d1)]) for r in range(d1)]
    weights = [by_rank[d] + (1.0 - by_rank[0])]
    for k in range(1, d1):
        weights.append(by_rank[d - k] - by_rank[d - k + 1])
    return weights, [r // d1 for r in rem0[:d]], rank[:d]


def _pack(weights: list, m: list, rank: list, group: tf.Tensor):
    """Corner weights ``(P, d+1)`` (the columns stacked), packed int64 keys
    ``(P*(d+1),)`` of the simplex corners (point-major), the size of the key
    space (float64), and the key's digit strides and radices.

    Every coordinate of a remainder-``k`` lattice point is ``k + (d+1) q_i``,
    so a vertex is ``(k, q_0..q_{d-1})`` (the last coordinate follows from the
    zero sum), packed with a mixed radix as ``k + sum_i (q_i - lo_i) T_i +
    group * G`` (``T_0 = d+1``).  That key space is ``(d+1)^(d-1)`` times
    smaller than one over raw coordinates, small enough for the dense table
    (:func:`_index_dense`) even for RGB features.  Corner k adds k to the
    coordinates with rank <= d-k and k-(d+1) to the others: remainder k, and
    ``q_i = m_i`` or ``m_i - 1``.
    """
    d = len(m)
    d1 = d + 1
    lo = [tf.cast(tf.reduce_min(mi), tf.int64) - 1 for mi in m]
    radix = [tf.cast(tf.reduce_max(mi), tf.int64) - lo_i + 1 for mi, lo_i in zip(m, lo)]
    strides = [tf.constant(d1, tf.int64)]
    for r in radix:
        strides.append(strides[-1] * r)
    group_stride = strides.pop()
    base = tf.cast(group, tf.int64) * group_stride
    for i in range(d):
        base = base + strides[i] * (tf.cast(m[i], tf.int64) - lo[i])
    keys = []
    for k in range(d1):
        key = base + k
        for i in range(d):
            key = key - strides[i] * tf.cast(rank[i] > d - k, tf.int64)
        keys.append(key)
    span = tf.cast(group_stride, tf.float64) * tf.cast(tf.reduce_max(group) + 1, tf.float64)
    packed = tf.reshape(tf.stack(keys, axis=1), [-1])
    return tf.stack(weights, axis=1), packed, span, tf.stack(strides), tf.stack(radix)


_XLA_FNS: dict = {}


def _simplex_fns(xla: bool):
    """``_simplex`` and ``_pack``, compiled with XLA when ``xla`` (a fused loop
    each instead of ~100 small ops; two computations, so that the reductions
    in ``_pack`` read materialized columns rather than recomputing the
    simplex).  Their output shapes follow from the input's, so XLA handles
    any number of points (it compiles once per new point count, i.e. per new
    image size)."""
    if not xla:
        return _simplex, _pack
    if not _XLA_FNS:
        _XLA_FNS["simplex"] = tf.function(_simplex, jit_compile=True, autograph=False)
        _XLA_FNS["pack"] = tf.function(_pack, jit_compile=True, autograph=False)
    return _XLA_FNS["simplex"], _XLA_FNS["pack"]


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
    simplex, pack = _simplex_fns(xla)
    weights, m, rank = simplex(features)
    weight, packed, span, strides, radix = pack(weights, m, rank, tf.cast(group, tf.int32))
    tf.debugging.assert_less(
        span,
        tf.constant(2.0**62, tf.float64),
        message="permutohedral lattice keys overflow int64: the features span too large a range",
    )

    # Index the occupied vertices.  When the key space is small enough (the
    # usual case for image features) a dense occupancy table does it in linear
    # time without hashing or sorting; otherwise fall back to tf.unique.
    size = _dense_size(span, xla)
    vertex, neighbours, num_vertices = tf.cond(
        size <= float(DENSE_TABLE_LIMIT),
        lambda: _index_dense(packed, strides, radix, tf.cast(size, tf.int32), d1, xla),
        lambda: _index_hashed(packed, strides, radix, d1),
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
