"""Dense-CRF post-processing (numpy + pydensecrf; no TensorFlow).

Public API::

    refined, labels = dense_crf(image, probabilities, **CRFParams().kwargs())
    refined_list, labels_list = dense_crf_batch(images, probabilities, n_jobs=2)
    params = CRFParams.from_dict(config["crf"]); params.to_dict()
    result = tune_crf(images, probabilities, labels, grid={"bilateral_compat": [3, 5, 10]})
"""

from kerasseg.postprocess.appearance import appearance_image
from kerasseg.postprocess.batch import dense_crf_batch
from kerasseg.postprocess.crf import (
    check_probabilities,
    dense_crf,
    probabilities_from_labels,
)
from kerasseg.errors import CRFConfigError, CRFError, CRFInputError
from kerasseg.postprocess.params import CRFParams
from kerasseg.postprocess.scores import segmentation_scores
from kerasseg.postprocess.tuning import DEFAULT_GRID, TuningResult, expand_grid, parse_grid, tune_crf

__all__ = [
    "DEFAULT_GRID",
    "CRFConfigError",
    "CRFError",
    "CRFInputError",
    "CRFParams",
    "appearance_image",
    "check_probabilities",
    "dense_crf",
    "dense_crf_batch",
    "expand_grid",
    "parse_grid",
    "probabilities_from_labels",
    "segmentation_scores",
    "tune_crf",
    "TuningResult",
]
