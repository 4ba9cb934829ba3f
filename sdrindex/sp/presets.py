"""Named Spatial Pooler configurations (NuPIC camelCase), as users know them.

- ``forum-global``: the configuration of the forum thread behind this project.
- ``htmcore-mnist``: htm.core's MNIST example (py/htm/examples/mnist.py).
- ``forum-local``: the forum's local-inhibition configuration.
- ``sdrindex-mnist`` (the default until issue 12): htm.core's MNIST parameters with
  wide, sparsely sampled receptive fields -- ``potentialRadius`` 14 (29x29 windows clipped
  at the edges: about half the image for a corner column, all of it for a central one)
  sampled at 5 % (``potentialPct`` 0.05, 11-42 potential synapses per column) and
  ``stimulusThreshold`` 4 -- with htm.core's input rule pixel >= the image's mean
  (:data:`PRESET_THRESHOLDS`). Chosen with ``sdrindex sweep`` on full MNIST (60,000 learned,
  10,000 test queries; ``scripts/sweep_grid.toml``): the best overlap k-NN accuracy of the
  grid (96.90 % with k = 5, 96.97 % with k = 10, against 96.23 % for ``htmcore-mnist`` at
  threshold 128) and the best retrieval (nearest MSE 0.0295, knn blend 0.0163). Wider
  windows sampled sparsely make each column count ink over a larger area, so SDR overlap
  tolerates small shifts of the strokes; denser (20 %) or sparser (5 %) codes, smaller
  windows, no boosting, 100x100 columns or a second epoch did not do better.
- ``sdrindex-mnist-deskew``: the same SP on digits deskewed by their image moments first
  (:data:`PRESET_PREPROCESS`, :mod:`sdrindex.preprocess`), for labels rather than images:
  SDR 5-NN 97.53 % against the default's 96.90 % (``scripts/sweep_repr.toml``), but the
  neighbours it finds are upright versions of the query, so the reconstructions, scored
  against the original slanted digits, are far worse (nearest MSE 0.0562 against 0.0295,
  Ridge decoder 0.0288 against 0.0081). Not the default for that reason; see the README's
  representation section for every row.
- ``sdrindex-mnist-planes`` (the default of ``sdrindex build`` and of the first start): the
  same SP over a thermometer code of three input planes (pixel >= 32, 128, 224;
  :data:`PRESET_PREPROCESS`), ``inputDimensions`` (28, 28, 3) and ``columnDimensions``
  (79, 79, 1) so every column's window holds all three planes, sampled at ``potentialPct``
  0.0167 to keep ``sdrindex-mnist``'s number of potential synapses, learning on the first
  15,000 training digits (:data:`PRESET_LEARN_LIMITS`; all 60,000 are encoded and
  indexed). On full MNIST (``scripts/sweep_repr.toml``) it brings every reconstruction
  closer to the original than ``sdrindex-mnist``: nearest MSE 0.0284 (0.0295), blend 0.0158
  (0.0163), back-projection 0.0156 (0.0235), Ridge decoder 0.0052 (0.0081), at the same
  labels (5-NN 96.80 % against 96.90 %; the planes rows span 96.75-96.93 %). Learning on
  5,000, 15,000 or 60,000 digits, or for two epochs, gave the same figures to within 0.2
  points and 0.0002 MSE, so the SP learns on a quarter of the digits and the first start
  is shorter than with ``sdrindex-mnist`` learning all 60,000 (README).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from sdrindex.errors import ParameterError

from .estimator import SpatialPooler

PRESETS: dict[str, dict[str, Any]] = {
    "forum-global": {
        "inputDimensions": (28, 28),
        "columnDimensions": (37, 37),
        "potentialRadius": 36,
        "potentialPct": 1.0,
        "globalInhibition": True,
        "localAreaDensity": -1,
        "numActiveColumnsPerInhArea": 8,
        "synPermInactiveDec": 0.008,
        "synPermActiveInc": 0.05,
        "synPermConnected": 0.1,
        "minPctOverlapDutyCycle": 0.001,
        "dutyCyclePeriod": 1000,
        "boostStrength": 17,
        "seed": 1,
    },
    "htmcore-mnist": {
        "inputDimensions": (28, 28),
        "columnDimensions": (79, 79),
        "potentialRadius": 7,
        "potentialPct": 0.1,
        "globalInhibition": True,
        "localAreaDensity": 0.1,
        "stimulusThreshold": 6,
        "synPermActiveInc": 0.14,
        "synPermInactiveDec": 0.02,
        "synPermConnected": 0.5,
        "minPctOverlapDutyCycle": 0.2,
        "dutyCyclePeriod": 1402,
        "boostStrength": 7,
        "wrapAround": False,
        "seed": 1,
    },
    "forum-local": {
        "inputDimensions": (28, 28),
        "columnDimensions": (30, 30),
        "potentialRadius": 5,
        "potentialPct": 0.1,
        "globalInhibition": False,
        "localAreaDensity": 0.1,
        "stimulusThreshold": 5,
        "boostStrength": 0.9,
        "wrapAround": True,
        "seed": 1,
    },
}

PRESETS["sdrindex-mnist"] = {
    **PRESETS["htmcore-mnist"],
    "potentialRadius": 14,
    "potentialPct": 0.05,
    "stimulusThreshold": 4,
}

PRESETS["sdrindex-mnist-deskew"] = dict(PRESETS["sdrindex-mnist"])

PRESETS["sdrindex-mnist-planes"] = {
    **PRESETS["sdrindex-mnist"],
    "inputDimensions": (28, 28, 3),
    "columnDimensions": (79, 79, 1),
    "potentialPct": 0.0167,
}

DEFAULT_PRESET = "sdrindex-mnist-planes"

#: The binarizing rule each preset was tuned with (pixel >= T is on); others use 128.
PRESET_THRESHOLDS: dict[str, int | str] = {
    "sdrindex-mnist": "mean",
    "sdrindex-mnist-deskew": "mean",
    "htmcore-mnist": 128,
}


#: The preprocessing each preset was tuned with (:mod:`sdrindex.preprocess`); others: none.
PRESET_PREPROCESS: dict[str, dict[str, Any]] = {
    "sdrindex-mnist-deskew": {"deskew": True},
    "sdrindex-mnist-planes": {"planes": [32, 128, 224]},
}


#: How many training images each preset's SP learns on (the rest are only encoded); others:
#: all. Measured on full MNIST (README, issue 12): learning on the first 15,000 digits gives
#: the codes of learning on all 60,000 (k-NN, MSEs) at a quarter of the learning time.
PRESET_LEARN_LIMITS: dict[str, int] = {
    "sdrindex-mnist-planes": 15000,
}


def learn_limit_for(source: str | Path | None) -> int | None:
    """The number of images a preset's SP learns on (None: all of them)."""
    name = DEFAULT_PRESET if source is None else str(source)
    return PRESET_LEARN_LIMITS.get(name)


def preprocess_for(source: str | Path | None) -> dict[str, Any] | None:
    """The preprocessing (deskew, blur, planes) that goes with a preset (None: none)."""
    name = DEFAULT_PRESET if source is None else str(source)
    spec = PRESET_PREPROCESS.get(name)
    return dict(spec) if spec else None


def threshold_for(source: str | Path | None) -> int | str:
    """The input threshold that goes with a preset (128 for presets without one and files)."""
    name = DEFAULT_PRESET if source is None else str(source)
    return PRESET_THRESHOLDS.get(name, 128)


def sp_from_config(source: str | Path | None) -> SpatialPooler:
    """A SpatialPooler from a preset name, or a TOML / JSON file of parameters.

    Files may use NuPIC's camelCase names or sdrindex's snake_case names; an unknown key
    raises :class:`ParameterError` naming it. ``None`` gives the default preset.
    """
    if source is None:
        source = DEFAULT_PRESET
    if str(source) in PRESETS:
        return SpatialPooler.from_nupic_params(dict(PRESETS[str(source)]))
    path = Path(source)
    if not path.is_file():
        raise ParameterError(
            f"SP config {str(source)!r} is neither a preset ({', '.join(PRESETS)}) nor a file"
        )
    text = path.read_text()
    try:
        if path.suffix.lower() == ".toml":
            params = tomllib.loads(text)
        else:
            params = json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ParameterError(
            f"{path}: not valid {path.suffix.lstrip('.') or 'JSON'}: {exc}"
        ) from exc
    if not isinstance(params, dict):
        raise ParameterError(f"{path}: expected a table of parameters, got {type(params).__name__}")
    try:
        return SpatialPooler.from_nupic_params(params)
    except ParameterError as exc:
        raise ParameterError(f"{path}: {exc}") from exc
