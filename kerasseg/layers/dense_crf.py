"""``DenseCRF``: a fully connected CRF (mean-field inference) as a Keras layer.

This is the TensorFlow version of the pydensecrf stage
(:func:`kerasseg.postprocess.dense_crf`): the same energy, the same parameter
names and defaults, so that refinement can run batched on a GPU and ship inside
an exported SavedModel without any compiled extension.

Energy (Kraehenbuehl & Koltun, NIPS 2011), for labels ``x`` of the pixels::

    E(x) = sum_i U_i(x_i) + sum_{i,j} mu(x_i, x_j) k(i, j)
    U_i(l) = -log p_i(l)                                   (unary)
    mu = Potts                                             (compatibility)
    k(i, j) = w_g exp(-|p_i - p_j|^2 / 2 gaussian_sxy^2)    (smoothness)
            + w_b exp(-|p_i - p_j|^2 / 2 bilateral_sxy^2
                      -|I_i - I_j|^2 / 2 bilateral_srgb^2)  (appearance)

Mean-field inference, as in the reference::

    Q = softmax(-U)
    repeat `iterations` times:
        Q = softmax(-U + w_g * K_g(Q) + w_b * K_b(Q))

where each ``K`` is the Gaussian filter with *symmetric normalization*
(pydensecrf's ``NORMALIZE_SYMMETRIC``): with ``n = 1 / sqrt(F(1))`` the
filtered message is ``n * F(n * Q)``, ``F`` being the un-normalized Gaussian
filter including every pixel's own contribution. ``DIAG_KERNEL`` only says that
the feature transform is a (here fixed, identity) diagonal matrix: the features
are positions divided by ``*_sxy`` and intensities divided by ``bilateral_srgb``.
Feature order follows pydensecrf's ``create_pairwise_*`` helpers: ``(row,
column, channel 0, channel 1, ...)``.

Filters:

* ``"lattice"``: the permutohedral lattice (:mod:`crf_permutohedral`), built the
  same way as pydensecrf's; agrees with it to float32 round-off.
* ``"grid"`` (appearance kernel, single-channel images only, where the space
  is 3-D): a bilateral grid with trilinear splat/slice
  (:mod:`crf_bilateral_grid`); cheaper to build, but only approximately the
  reference's kernel (99.6-99.99 % label agreement on ISBI slices).
* ``"auto"``: the lattice (exact agreement; a 3-D lattice for single-channel
  images, which is the fast path there: 4 simplex corners per pixel instead of
  6 for RGB, and a small key space indexed by a dense table).

With ``xla_lattice`` (the default) the lattice mean-field loop runs as one XLA
computation (:mod:`crf_mean_field`); without it, as TensorFlow ops with both
kernels fused into one splat/slice per step (:class:`_FusedPairwise`).
"""

from __future__ import annotations

from typing import Callable, Sequence

import keras
import tensorflow as tf

from kerasseg.layers import crf_bilateral_grid as _grid
from kerasseg.layers import crf_mean_field as _mean_field
from kerasseg.layers import crf_permutohedral as _lattice

# Whether "auto" uses the bilateral grid for single-channel images.  Off: on
# this CPU the 3-D lattice was as fast as the grid and agrees exactly with
# pydensecrf (the grid: 99.6-99.99 % of labels on ISBI slices).
AUTO_GRID = False
_GAUSSIAN_FILTERS = ("auto", "lattice")
_BILATERAL_FILTERS = ("auto", "lattice", "grid")


def _as_float_list(value: float | list[float] | tuple[float, ...]) -> float | list[float]:
    if isinstance(value, (list, tuple)):
        return [float(v) for v in value]
    return float(value)


@keras.saving.register_keras_serializable(package="kerasseg")
class DenseCRF(keras.layers.Layer):
    """Fully connected CRF refinement of per-pixel class probabilities.

    Call it on ``[image, probabilities]``:

    * ``image``: ``(B, H, W, C)`` uint8 or float in 0..255 intensity space
      (window 16-bit or normalized images to 0..255 first; ``C`` must be
      static, 1 for grayscale, 3 for RGB, any other count works too).
    * ``probabilities``: ``(B, H, W, K)`` class probabilities (softmax output),
      or logits with ``from_logits=True``. ``K == 1`` is read as a sigmoid
      output (foreground probability) and expanded to two classes inside.

    Returns refined probabilities ``(B, H, W, K)`` float32 (for ``K == 1`` the
    refined foreground probability). ``H`` and ``W`` may be dynamic. All
    computation is float32, also under a mixed-precision policy. The layer has
    no weights, and is differentiable with respect to the probabilities (or
    logits), so it can sit at the end of a network trained end to end
    (CRF-as-RNN style).

    Args:
        iterations: mean-field iterations.
        gaussian_sxy: spatial standard deviation (pixels) of the smoothness kernel.
        gaussian_compat: Potts weight of the smoothness kernel.
        bilateral_sxy: spatial standard deviation (pixels) of the appearance kernel.
        bilateral_srgb: intensity standard deviation of the appearance kernel,
            one number for all channels or one per channel.
        bilateral_compat: Potts weight of the appearance kernel.
        from_logits: the second input holds logits, not probabilities.
        clip: probabilities are clipped to ``[clip, 1]`` before ``-log``
            (pydensecrf's ``unary_from_softmax`` default).
        gaussian_filter: ``"auto"`` or ``"lattice"``.
        bilateral_filter: ``"auto"``, ``"lattice"`` or ``"grid"`` (single-channel
            images only).
        xla_lattice: compile the element-wise part of the lattice construction
            and, with lattice filters, the whole mean-field loop with XLA
            (several times faster on CPU). Compiles once per new image size
            and lattice-size bucket (vertex counts rounded up to a power of
            two): measured on 2 CPU cores under load, about 17 s for the first
            call and about 4 s for a new bucket. Turn off for inputs whose size
            changes every call.
    """

    def __init__(
        self,
        iterations: int = 5,
        gaussian_sxy: float = 3.0,
        gaussian_compat: float = 3.0,
        bilateral_sxy: float = 80.0,
        bilateral_srgb: float | list[float] | tuple[float, ...] = 13.0,
        bilateral_compat: float = 10.0,
        from_logits: bool = False,
        clip: float = 1e-5,
        gaussian_filter: str = "auto",
        bilateral_filter: str = "auto",
        xla_lattice: bool = True,
        **kwargs,
    ):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if int(iterations) < 0:
            raise ValueError(f"DenseCRF: iterations must be >= 0, got {iterations}")
        for name, value in (("gaussian_sxy", gaussian_sxy), ("bilateral_sxy", bilateral_sxy)):
            if float(value) <= 0:
                raise ValueError(f"DenseCRF: {name} must be > 0, got {value}")
        srgb = _as_float_list(bilateral_srgb)
        if any(s <= 0 for s in (srgb if isinstance(srgb, list) else [srgb])):
            raise ValueError(f"DenseCRF: bilateral_srgb must be > 0, got {bilateral_srgb}")
        if not 0.0 <= float(clip) < 1.0:
            raise ValueError(f"DenseCRF: clip must be in [0, 1), got {clip}")
        if gaussian_filter not in _GAUSSIAN_FILTERS:
            raise ValueError(f"DenseCRF: gaussian_filter must be one of {_GAUSSIAN_FILTERS}, got {gaussian_filter!r}")
        if bilateral_filter not in _BILATERAL_FILTERS:
            raise ValueError(f"DenseCRF: bilateral_filter must be one of {_BILATERAL_FILTERS}, got {bilateral_filter!r}")
        self.iterations = int(iterations)
        self.gaussian_sxy = float(gaussian_sxy)
        self.gaussian_compat = float(gaussian_compat)
        self.bilateral_sxy = float(bilateral_sxy)
        self.bilateral_srgb = srgb
        self.bilateral_compat = float(bilateral_compat)
        self.from_logits = bool(from_logits)
        self.clip = float(clip)
        self.gaussian_filter = gaussian_filter
        self.bilateral_filter = bilateral_filter
        self.xla_lattice = bool(xla_lattice)

    # ------------------------------------------------------------------ config
    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            iterations=self.iterations,
            gaussian_sxy=self.gaussian_sxy,
            gaussian_compat=self.gaussian_compat,
            bilateral_sxy=self.bilateral_sxy,
            bilateral_srgb=self.bilateral_srgb,
            bilateral_compat=self.bilateral_compat,
            from_logits=self.from_logits,
            clip=self.clip,
            gaussian_filter=self.gaussian_filter,
            bilateral_filter=self.bilateral_filter,
            xla_lattice=self.xla_lattice,
        )
        return config

    # ------------------------------------------------------------------ shapes
    def _split(self, inputs):
        if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
            raise ValueError("DenseCRF expects [image, probabilities] as its input")
        return inputs[0], inputs[1]

    def compute_output_shape(self, input_shape):
        image_shape, prob_shape = self._split(input_shape)
        return tuple(prob_shape)

    def compute_output_spec(self, inputs):
        image, probs = self._split(inputs)
        self._check_shapes(image.shape, probs.shape)
        return keras.KerasTensor(tuple(probs.shape), dtype="float32")

    def _check_shapes(self, image_shape, prob_shape) -> None:
        if len(image_shape) != 4 or len(prob_shape) != 4:
            raise ValueError(
                "DenseCRF expects image (B,H,W,C) and probabilities (B,H,W,K), "
                f"got shapes {tuple(image_shape)} and {tuple(prob_shape)}"
            )
        if image_shape[-1] is None:
            raise ValueError("DenseCRF needs a static image channel count (the last image dimension)")
        srgb = self.bilateral_srgb
        if isinstance(srgb, list) and len(srgb) != image_shape[-1]:
            raise ValueError(
                f"DenseCRF: bilateral_srgb has {len(srgb)} values but the image has {image_shape[-1]} channels"
            )
        if self.bilateral_filter == "grid" and image_shape[-1] != 1:
            raise ValueError(
                f"DenseCRF: bilateral_filter='grid' needs a single-channel image, got {image_shape[-1]} channels"
            )

    # ------------------------------------------------------------------ call
    def call(self, inputs):
        image, probs = self._split(inputs)
        image = tf.convert_to_tensor(image)
        probs = tf.convert_to_tensor(probs)
        self._check_shapes(image.shape, probs.shape)
        return refine(
            image,
            probs,
            iterations=self.iterations,
            gaussian_sxy=self.gaussian_sxy,
            gaussian_compat=self.gaussian_compat,
            bilateral_sxy=self.bilateral_sxy,
            bilateral_srgb=self.bilateral_srgb,
            bilateral_compat=self.bilateral_compat,
            from_logits=self.from_logits,
            clip=self.clip,
            gaussian_filter=self.gaussian_filter,
            bilateral_filter=self.bilateral_filter,
            xla_lattice=self.xla_lattice,
        )


# ---------------------------------------------------------------------- core
def _unary(probs: tf.Tensor, *, from_logits: bool, clip: float) -> tf.Tensor:
    """Unary energies ``(B, H, W, K')``, ``K' = max(K, 2)``."""
    k = probs.shape[-1]
    if from_logits:
        if k == 1:
            probs = tf.concat([tf.zeros_like(probs), probs], axis=-1)
        return -tf.nn.log_softmax(probs, axis=-1)
    if k == 1:
        probs = tf.concat([1.0 - probs, probs], axis=-1)
    return -tf.math.log(tf.clip_by_value(probs, clip, 1.0))


def _pixel_grid(height: tf.Tensor, width: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Row and column coordinates ``(H, W)`` float32."""
    rows = tf.range(height, dtype=tf.float32)
    cols = tf.range(width, dtype=tf.float32)
    yy, xx = tf.meshgrid(rows, cols, indexing="ij")
    return yy, xx


def _softmax0(x: tf.Tensor) -> tf.Tensor:
    """Softmax over axis 0 (classes) of a channel-major ``(K, P)`` tensor."""
    e = tf.exp(x - tf.reduce_max(x, axis=0, keepdims=True))
    return e / tf.reduce_sum(e, axis=0, keepdims=True)


class _NormalizedKernel:
    """Symmetric-normalized Gaussian kernel: ``values -> n * F(n * values)``.

    ``F`` is the un-normalized filter on channel-major values ``(C, P) -> (C, P)``;
    ``norm`` is ``(1, P)``.
    """

    lattice: _lattice.Lattice  # set by _lattice_kernel only (a grid kernel has none)

    def __init__(self, filter_fn, num_points: tf.Tensor):
        self.filter_fn = filter_fn
        ones = tf.ones([1, num_points], tf.float32)
        self.norm = tf.math.rsqrt(filter_fn(ones) + 1e-20)
        # n * F(n): the message of "all classes together", used to get the
        # last class's message from the others (the classes of Q sum to one).
        self.total = self.norm * filter_fn(self.norm)

    def __call__(self, values: tf.Tensor) -> tf.Tensor:
        return self.norm * self.filter_fn(self.norm * values)


def _lattice_kernel(features: tf.Tensor, group: tf.Tensor | None, xla: bool) -> _NormalizedKernel:
    lattice = _lattice.build_lattice(features, group, xla=xla)
    kernel = _NormalizedKernel(lambda v: _lattice.lattice_filter(lattice, v), tf.shape(features)[0])
    kernel.lattice = lattice
    return kernel


class _FusedPairwise:
    """Both pairwise messages of one mean-field step in a single splat/slice.

    The smoothness lattice (shared by all images, ``Mg`` vertices, one copy per
    image) and the appearance lattice (``Mb`` vertices) are laid side by side
    in one table of ``B*Mg + Mb`` vertices: every pixel has 3 + (d+1) corners in
    it.  Normalization (``n``), the slicing constant and the Potts weights are
    folded into per-corner splat and slice weights, so a step costs one
    scatter-add, the two (small) blurs and one gather, instead of two of each
    plus the normalization products.  Mathematically the same as
    ``w_g n_g F_g(n_g Q) + w_b n_b F_b(n_b Q)``.

    Call on ``(C, B*HW)`` channel-major values; returns ``(C, B*HW)`` messages.
    """

    def __init__(self, gauss: _NormalizedKernel, bilateral: _NormalizedKernel, *, batch, hw, w_g: float, w_b: float):
        lg, lb = gauss.lattice, bilateral.lattice
        self.lg, self.lb, self.batch = lg, lb, batch
        self.size_g = batch * lg.num_vertices
        image_of_point = tf.repeat(tf.range(batch), hw)
        vertex_g = tf.tile(lg.vertex, [batch, 1]) + (image_of_point * lg.num_vertices)[:, None]
        self.index = tf.concat([vertex_g, lb.vertex + self.size_g], axis=1)  # (B*HW, 3 + d+1)
        norm_g = tf.tile(gauss.norm, [1, batch])[0][:, None]  # (B*HW, 1)
        norm_b = bilateral.norm[0][:, None]
        weight_g = tf.tile(lg.weight, [batch, 1])
        alpha_g = 1.0 / (1.0 + 2.0 ** (-lg.dim))
        alpha_b = 1.0 / (1.0 + 2.0 ** (-lb.dim))
        self.splat_weight = tf.concat([weight_g * norm_g, lb.weight * norm_b], axis=1)
        self.slice_weight = tf.concat(
            [weight_g * (norm_g * (alpha_g * w_g)), lb.weight * (norm_b * (alpha_b * w_b))], axis=1
        )
        self.size = self.size_g + lb.num_vertices

    def _blur(self, table: tf.Tensor, reverse: bool) -> tf.Tensor:
        channels = tf.shape(table)[0]
        part_g = tf.reshape(table[:, : self.size_g], [channels * self.batch, -1])
        part_g = tf.reshape(_lattice.blur(self.lg, part_g, reverse), [channels, -1])
        part_b = _lattice.blur(self.lb, table[:, self.size_g :], reverse)
        return tf.concat([part_g, part_b], axis=1)

    def _apply(self, values: tf.Tensor, splat_w: tf.Tensor, slice_w: tf.Tensor, reverse: bool) -> tf.Tensor:
        table = _lattice.scatter_add(self.index, splat_w, values, self.size)
        return _lattice.gather_interpolate(self._blur(table, reverse), self.index, slice_w)

    def __call__(self, values: tf.Tensor) -> tf.Tensor:
        @tf.custom_gradient
        def _messages(v):
            def grad(upstream):  # the transpose: weights swapped, blur axes reversed
                return self._apply(upstream, self.slice_weight, self.splat_weight, True)

            return self._apply(v, self.splat_weight, self.slice_weight, False), grad

        return _messages(values)


def _grid_kernel(features: tf.Tensor, group: tf.Tensor | None) -> _NormalizedKernel:
    grid = _grid.build_grid(features, group)
    return _NormalizedKernel(lambda v: _grid.grid_filter(grid, v), tf.shape(features)[0])


def refine(
    image: tf.Tensor,
    probs: tf.Tensor,
    *,
    iterations: int = 5,
    gaussian_sxy: float = 3.0,
    gaussian_compat: float = 3.0,
    bilateral_sxy: float = 80.0,
    bilateral_srgb: float | Sequence[float] = 13.0,
    bilateral_compat: float = 10.0,
    from_logits: bool = False,
    clip: float = 1e-5,
    gaussian_filter: str = "auto",
    bilateral_filter: str = "auto",
    xla_lattice: bool = True,
) -> tf.Tensor:
    """Functional form of :class:`DenseCRF` (same arguments, same shapes)."""
    image = tf.cast(image, tf.float32)
    probs = tf.cast(probs, tf.float32)
    out_classes = probs.shape[-1]
    channels = image.shape[-1]
    unary = _unary(probs, from_logits=from_logits, clip=clip)  # (B,H,W,K)
    num_classes = tf.shape(unary)[-1]  # may be dynamic; K == 1 is only detected when static

    shape = tf.shape(unary)
    batch, height, width = shape[0], shape[1], shape[2]
    hw = height * width

    yy, xx = _pixel_grid(height, width)

    # Smoothness kernel: the same for every image, so one lattice on H*W
    # points filters the whole batch (images and classes as channels).
    gauss_feats = tf.reshape(tf.stack([yy / gaussian_sxy, xx / gaussian_sxy], axis=-1), [-1, 2])

    # Appearance kernel: one lattice over all images, kept apart by group id.
    srgb = bilateral_srgb if isinstance(bilateral_srgb, (list, tuple)) else [bilateral_srgb] * channels
    pos = tf.stack([yy / bilateral_sxy, xx / bilateral_sxy], axis=-1)  # (H,W,2)
    pos = tf.broadcast_to(pos[None], [batch, height, width, 2])
    colour = image / tf.constant(srgb, tf.float32)
    bil_feats = tf.reshape(tf.concat([pos, colour], axis=-1), [-1, 2 + channels])
    group = tf.repeat(tf.range(batch), hw)
    use_grid = bilateral_filter == "grid" or (bilateral_filter == "auto" and channels == 1 and AUTO_GRID)
    if use_grid and channels != 1:
        raise ValueError(f"DenseCRF: bilateral_filter='grid' needs a single-channel image, got {channels} channels")

    # Mean field, channel-major: (K, B*H*W), so filtering needs no transposes.
    u = tf.reshape(tf.transpose(unary, [3, 0, 1, 2]), [num_classes, -1])
    if xla_lattice and not use_grid:  # both lattices, the whole loop in one XLA computation
        q = _mean_field.mean_field(
            u, _lattice.build_lattice(gauss_feats, None, xla=True), _lattice.build_lattice(bil_feats, group, xla=True),
            iterations=iterations, gaussian_compat=gaussian_compat, bilateral_compat=bilateral_compat,
        )
        return _to_output(q, num_classes, batch, height, width, out_classes)

    gauss = _lattice_kernel(gauss_feats, None, xla_lattice)
    bilateral = _grid_kernel(bil_feats, group) if use_grid else _lattice_kernel(bil_feats, group, xla_lattice)
    q = _softmax0(-u)
    gauss_total = tf.tile(gauss.total, [1, batch])  # (1, B*HW)
    total = gaussian_compat * gauss_total + bilateral_compat * bilateral.total  # message of sum(Q) = 1
    messages: Callable[[tf.Tensor], tf.Tensor]
    if use_grid:

        def grid_messages(head: tf.Tensor) -> tf.Tensor:
            # One smoothness-lattice pass serves all images: (K-1, B*HW) -> (B*(K-1), HW).
            msg_g = tf.reshape(gauss(tf.reshape(head, [-1, hw])), tf.shape(head))
            return gaussian_compat * msg_g + bilateral_compat * bilateral(head)

        messages = grid_messages
    else:
        messages = _FusedPairwise(gauss, bilateral, batch=batch, hw=hw, w_g=gaussian_compat, w_b=bilateral_compat)

    for _ in range(iterations):
        msg = messages(q[:-1])  # (K-1, B*HW): the last class's message follows from sum(Q) = 1
        msg = tf.concat([msg, total - tf.reduce_sum(msg, axis=0, keepdims=True)], axis=0)
        q = _softmax0(-u + msg)

    return _to_output(q, num_classes, batch, height, width, out_classes)


def _to_output(q: tf.Tensor, num_classes, batch, height, width, out_classes) -> tf.Tensor:
    """Channel-major ``(K, B*H*W)`` -> ``(B, H, W, K)`` (the foreground only for a sigmoid input)."""
    q = tf.transpose(tf.reshape(q, [num_classes, batch, height, width]), [1, 2, 3, 0])
    if out_classes == 1:
        q = q[..., 1:]
    return q
