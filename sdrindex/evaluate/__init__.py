"""How well each way back from an SDR works on digits the Spatial Pooler has never seen.

:func:`evaluate` runs a bundle on the MNIST test set (or its first N images) and returns a
report (also written as ``report.json``, ``report.md`` and PNG figures by
:func:`write_report`). Each section is a function returning a dataclass
(:mod:`~sdrindex.evaluate.sections`, :mod:`~sdrindex.evaluate.reconstruction`) that
:func:`evaluate` composes into a :class:`Report`:

- ``classification``: labels from the SDRs, 1-NN and k-NN votes over the bundle's index and
  a logistic-regression readout (the labelers of :mod:`sdrindex.labels`);
- ``reconstruction``: per method, MSE and PSNR on [0, 1] pixels, SSIM (scikit-image), the
  accuracy of a fixed pixel-space classifier on the reconstructions and the time per query
  (batched, including the index search and any encoding the method does). Reference rows
  measured in the same run: ``pixel_oracle`` (the training image nearest in pixel space, the
  best any retrieval can do), ``mean_image``, ``pca`` (as many components as the SDRs have
  active bits) and ``matching_pursuit`` (:class:`~sdrindex.baselines.MatchingPursuitCoder`
  at the same atom budget);
- ``index``: recall@10 of every backend against the exact one (ties counted: a result is
  right when its overlap is at least the true 10th-best overlap) and queries per second;
- ``noise``: accuracy and MSE when a fraction of each query SDR's active bits is swapped for
  random inactive ones;
- ``sp``: sparsity, columns ever active, mean column entropy, activation frequencies.

The methods reported come from one list (:mod:`~sdrindex.evaluate.methods`). The bundle is
never changed: a readout or decoder it lacks is fitted for the run only.

:func:`sweep` learns a small grid of Spatial Pooler configurations and measures each
(k-NN accuracy, retrieval MSE, sparsity, build time) so users can tune.

Definitions (:mod:`~sdrindex.evaluate.metrics`): MSE is the mean over images and pixels of
the squared error on [0, 1]; ``psnr = 10 log10(1 / mse)`` of that mean; SSIM is the mean of
scikit-image's ``structural_similarity(data_range=1)`` over images. The pixel-space
classifier is PCA (50 components) followed by a distance-weighted 3-NN vote, fitted on the
training images once and applied unchanged to originals and reconstructions.

Modules: ``methods`` (the method lists), ``metrics``, ``sections`` (inputs, labels, index,
noise, SP), ``reconstruction`` (SDR and reference rows), ``run`` (:func:`evaluate`),
``report`` (the files), ``plots`` (the figures), ``grid`` (:func:`sweep`).
"""

from sdrindex.evaluate.grid import format_sweep, load_grid, sweep
from sdrindex.evaluate.methods import NOISE_FRACTIONS, REFERENCE_METHODS, SDR_METHODS
from sdrindex.evaluate.metrics import PixelClassifier, mean_ssim, mse, psnr, recall_at_k
from sdrindex.evaluate.report import write_report
from sdrindex.evaluate.run import Report, evaluate

__all__ = [
    "evaluate",
    "Report",
    "write_report",
    "sweep",
    "format_sweep",
    "load_grid",
    "mse",
    "psnr",
    "mean_ssim",
    "recall_at_k",
    "PixelClassifier",
    "REFERENCE_METHODS",
    "SDR_METHODS",
    "NOISE_FRACTIONS",
]
