"""The HTM Spatial Pooler: binary inputs -> SDRs (NuPIC-exact), and its named configurations.

- :class:`SpatialPooler` (:mod:`.estimator`): the scikit-learn style estimator;
- :mod:`.presets`: named configurations (``PRESETS``, ``sp_from_config``,
  ``threshold_for``, ``preprocess_for``);
- :mod:`.topology`: coordinates, neighbourhoods, the column -> input mapping.

The numba kernels (:mod:`._kernels` for learning, :mod:`._local` for local inhibition,
:mod:`._infer` for inference) and the typed structures they take (:mod:`._structs`) are
private.
"""

from . import topology
from ._io import FORMAT_VERSION
from ._params import NUPIC_PARAM_NAMES
from .estimator import SpatialPooler
from .presets import (
    DEFAULT_PRESET,
    PRESET_LEARN_LIMITS,
    PRESET_PREPROCESS,
    PRESET_THRESHOLDS,
    PRESETS,
    learn_limit_for,
    preprocess_for,
    sp_from_config,
    threshold_for,
)

__all__ = [
    "SpatialPooler",
    "NUPIC_PARAM_NAMES",
    "FORMAT_VERSION",
    "PRESETS",
    "DEFAULT_PRESET",
    "PRESET_THRESHOLDS",
    "PRESET_PREPROCESS",
    "PRESET_LEARN_LIMITS",
    "learn_limit_for",
    "preprocess_for",
    "sp_from_config",
    "threshold_for",
    "topology",
]
