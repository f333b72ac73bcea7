"""Dense CRF over many images, optionally in worker processes.

pydensecrf's inference is single-threaded C++, so images are spread over
``n_jobs`` processes. Each image is refined by the very same function as in
:func:`dense_crf`, and the CRF is deterministic, so results are identical to a
serial run (a test checks it). Workers are started with the ``forkserver``
method where available (``spawn`` otherwise): forking a parent that already
runs TensorFlow's thread pools is unsafe.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from kerasseg.postprocess.crf import dense_crf
from kerasseg.errors import CRFInputError

Task = tuple[Any, Any, dict]


def resolve_n_jobs(n_jobs: int | None) -> int:
    """``None``/1 -> 1; ``-1`` -> all CPUs; ``-2`` -> all but one; else ``n_jobs``."""
    cpus = os.cpu_count() or 1
    if n_jobs is None or n_jobs == 0:
        return 1
    if n_jobs < 0:
        return max(1, cpus + 1 + int(n_jobs))
    return int(n_jobs)


def _mp_context() -> multiprocessing.context.BaseContext:
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def _run_one(task: Task) -> tuple[np.ndarray, np.ndarray]:
    image, probabilities, kwargs = task
    return dense_crf(image, probabilities, **kwargs)


def imap_tasks(
    fn: Callable[[Any], Any],
    tasks: Iterable[Any],
    *,
    n_jobs: int | None = 1,
    initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
) -> Iterator[Any]:
    """Yield ``fn(t)`` for each task, in order, computed by ``n_jobs`` worker processes.

    ``fn`` and ``initializer`` must be picklable module-level functions;
    ``initializer(*initargs)`` runs once per worker (in this process when serial),
    e.g. to hand every worker the images once instead of once per task.
    Exceptions raised in a worker (e.g. :class:`CRFInputError`) are re-raised
    here unchanged.
    """
    tasks = list(tasks)
    jobs = min(resolve_n_jobs(n_jobs), max(1, len(tasks)))
    if jobs == 1:
        if initializer is not None:
            initializer(*initargs)
        for t in tasks:
            yield fn(t)
        return
    with ProcessPoolExecutor(
        max_workers=jobs, mp_context=_mp_context(), initializer=initializer, initargs=initargs
    ) as pool:
        yield from pool.map(fn, tasks, chunksize=1)


def map_tasks(fn: Callable[[Any], Any], tasks: Iterable[Any], **kwargs: Any) -> list[Any]:
    """``list(imap_tasks(fn, tasks, **kwargs))``."""
    return list(imap_tasks(fn, tasks, **kwargs))


def dense_crf_batch(
    images: Sequence[Any] | np.ndarray,
    probabilities: Sequence[Any] | np.ndarray,
    *,
    n_jobs: int | None = 1,
    names: Sequence[str] | None = None,
    **params: Any,
) -> tuple[Any, Any]:
    """Apply :func:`dense_crf` to every ``(image, probabilities)`` pair.

    Args:
        images: ``(N, H, W[, C])`` array or a sequence of per-image arrays (sizes may differ).
        probabilities: ``(N, H, W, K)`` array or a sequence of ``(H, W, K)`` arrays.
        n_jobs: worker processes (1 = in this process, -1 = one per CPU).
        names: per-image names for error messages (default ``"batch item i"``).
        **params: :func:`dense_crf` keyword arguments (e.g. ``**CRFParams().kwargs()``).

    Returns:
        ``(refined, labels)``: stacked arrays ``(N, H, W, K)`` / ``(N, H, W)`` when both
        inputs were arrays, else lists in input order.

    Raises:
        CRFInputError: different numbers of images and probability maps, or a bad item.
    """
    n_img, n_prob = len(images), len(probabilities)
    if n_img != n_prob:
        raise CRFInputError(f"dense_crf_batch: {n_img} images but {n_prob} probability maps")
    if names is not None and len(names) != n_img:
        raise CRFInputError(f"dense_crf_batch: {len(names)} names for {n_img} images")
    params.pop("source", None)
    tasks = [
        (images[i], probabilities[i], {**params, "source": names[i] if names is not None else f"batch item {i}"})
        for i in range(n_img)
    ]
    results = map_tasks(_run_one, tasks, n_jobs=n_jobs)
    refined = [r[0] for r in results]
    labels = [r[1] for r in results]
    if isinstance(images, np.ndarray) and isinstance(probabilities, np.ndarray) and n_img:
        return np.stack(refined), np.stack(labels)
    return refined, labels
