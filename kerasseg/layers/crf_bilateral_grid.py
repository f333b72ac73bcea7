"""Bilateral-grid Gaussian filtering (low-dimensional fast path) in TensorFlow ops.

For a single-channel image the appearance kernel lives in a 3-D space (row,
column, intensity).  There a regular grid is cheaper to build than a
permutohedral lattice: every point is splatted onto the ``2^D`` corners of its
grid cell with multilinear (tent) weights, the grid is blurred with a
``[1, 2, 1]`` stencil along each axis, and values are sliced back with the same
multilinear weights (Chen, Paris & Durand, SIGGRAPH 2007).

Grid spacing: the tent splat and the tent slice each add a variance of
``h^2 / 6`` per axis, the ``[1, 2, 1] / 4`` blur ``h^2 / 2``, so a spacing of
``h = sqrt(6 / 5)`` feature units gives a total variance of 1, i.e. the kernel
``exp(-|f_i - f_j|^2 / 2)`` of features already divided by their standard
deviations.  The overall scale is irrelevant under the symmetric
normalization the CRF applies.

Shapes: ``features`` ``(P, D)`` float32, ``group`` ``(P,)`` int, values ``(C, P)``.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import tensorflow as tf

from kerasseg.layers.crf_permutohedral import gather_interpolate, scatter_add

SPACING = math.sqrt(6.0 / 5.0)
_PAD = 2  # one cell for the multilinear footprint, one for the blur stencil


class Grid(NamedTuple):
    """A built grid.

    Attributes:
        corner: ``(P, 2^D)`` int32 flat cell index of each corner.
        weight: ``(P, 2^D)`` float32 multilinear weight of each corner.
        dims: ``(D,)`` int32 grid size per axis (per group).
        num_groups: scalar int32.
        dim: static ``D``.
    """

    corner: tf.Tensor
    weight: tf.Tensor
    dims: tf.Tensor
    num_groups: tf.Tensor
    dim: int


def build_grid(features: tf.Tensor, group: tf.Tensor | None = None) -> Grid:
    """Place ``(P, D)`` features (in units of their standard deviations) on a grid."""
    features = tf.convert_to_tensor(features, tf.float32)
    d = features.shape[-1]
    if d is None:
        raise ValueError("build_grid needs a static feature dimension")
    num_points = tf.shape(features)[0]
    if group is None:
        group = tf.zeros([num_points], tf.int32)
    group = tf.cast(group, tf.int32)
    num_groups = tf.reduce_max(group) + 1

    scaled = (features - tf.reduce_min(features, axis=0)) / SPACING + float(_PAD)
    base = tf.floor(scaled)
    frac = scaled - base
    base = tf.cast(base, tf.int32)
    dims = tf.reduce_max(base, axis=0) + _PAD + 1  # (D,)
    strides = [tf.constant(1, tf.int32)]
    for i in range(d - 1, 0, -1):
        strides.insert(0, strides[0] * dims[i])
    cells = strides[0] * dims[0]
    tf.debugging.assert_less(
        tf.cast(cells, tf.float64) * tf.cast(num_groups, tf.float64),
        tf.constant(2.0**31, tf.float64),
        message="bilateral grid too large: the features span too wide a range",
    )
    stride_vec = tf.stack(strides)
    origin = tf.reduce_sum(base * stride_vec[None], axis=1) + group * cells  # (P,)

    corners, weights = [], []
    for offs in itertools.product((0, 1), repeat=d):
        offset = sum(o * strides[i] for i, o in enumerate(offs) if o)
        corners.append(origin + offset if offs != (0,) * d else origin)
        w = None
        for i, o in enumerate(offs):
            wi = frac[:, i] if o else 1.0 - frac[:, i]
            w = wi if w is None else w * wi
        weights.append(w)
    return Grid(
        corner=tf.stack(corners, axis=1),
        weight=tf.stack(weights, axis=1),
        dims=dims,
        num_groups=num_groups,
        dim=d,
    )


def _blur(grid: Grid, values: tf.Tensor) -> tf.Tensor:
    """``[1, 2, 1]`` stencil along every grid axis; ``values`` is ``(C, G, *dims)``."""
    for axis in range(2, grid.dim + 2):
        n = tf.shape(values)[axis]
        lower = tf.gather(values, tf.range(0, n - 2), axis=axis)
        centre = tf.gather(values, tf.range(1, n - 1), axis=axis)
        upper = tf.gather(values, tf.range(2, n), axis=axis)
        inner = 2.0 * centre + lower + upper
        # The outermost cells are padding that no point touches: keep them zero.
        paddings = [[0, 0]] * (grid.dim + 2)
        paddings[axis] = [1, 1]
        values = tf.pad(inner, paddings)
    return values


def _apply(grid: Grid, values: tf.Tensor) -> tf.Tensor:
    channels = values.shape[0] if values.shape[0] is not None else tf.shape(values)[0]
    cells = grid.num_groups * tf.reduce_prod(grid.dims)
    splat = scatter_add(grid.corner, grid.weight, values, cells)  # (C, cells)
    shape = tf.concat([[channels, grid.num_groups], grid.dims], axis=0)
    blurred = tf.reshape(_blur(grid, tf.reshape(splat, shape)), [channels, cells])
    return gather_interpolate(blurred, grid.corner, grid.weight) * (1.0 / 4.0**grid.dim)


def grid_filter(grid: Grid, values: tf.Tensor) -> tf.Tensor:
    """Approximate Gaussian filtering of channel-major ``(C, P)`` values -> ``(C, P)``.

    The operator is symmetric (slice = splat transposed, symmetric blur), so
    its gradient is the filter itself.
    """
    values = tf.convert_to_tensor(values, tf.float32)

    @tf.custom_gradient
    def _filter(v):
        return _apply(grid, v), lambda upstream: _apply(grid, upstream)

    return _filter(values)
