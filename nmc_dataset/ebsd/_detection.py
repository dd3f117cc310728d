"""The instrument's detection limit, applied alike to measured sections and to any other side
they are compared with (docs/ebsd.md#detection-limit).

An EBSD map leaves pixels unindexed or under the CI threshold, above all at grain junctions and
boundaries. A grain made only of such pixels is not in the measured map at all, and a grain with
few confident pixels is there with a guessed shape. A model (or the truth of a closed loop) is
then comparable with the measured sections only once the same loss is applied to its sections:

1. **The loss, measured** (:func:`low_ci_rates`). Every pixel of a section's particle mask is a
   junction (its 3 × 3 neighbourhood holds three or more grains of the label map), a boundary
   (two) or an interior pixel (one). The instrument's loss is the fraction of non-confident
   pixels per class, ``(p_junction, p_boundary, p_interior)``, pooled over the measured
   sections. It is measured on the completed label map that is compared (the fitted one), the
   classes of a model's section are taken on its own label map the same way.
2. **The loss, simulated** (:func:`simulate_confident`). Each pixel of a section is made
   non-confident independently with the probability of its class.
3. **The criterion** (:func:`detected`). A grain counts when at least ``min_confident_px`` of its
   pixels are confident. On the measured side the confident pixels are the scan's own (indexed,
   CI ≥ the import's threshold); on the other side they are drawn by step 2.

With an instrument that indexes every pixel, the rates are 0, no random number is drawn, every
pixel is confident and every grain counts: comparisons are unchanged.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from nmc_dataset.ebsd._completion import (
    DEFAULT_FILL_ITERATIONS,
    DEFAULT_GAP_PX,
    DEFAULT_REACH_PX,
    bridge_pairs,
    shape_fill,
)
from nmc_dataset.ebsd._reconstruct import relabel_by_first_appearance
from nmc_dataset.errors import InputError

#: Fewest confident pixels a grain needs to count (the criterion's default ``k``).
DEFAULT_MIN_CONFIDENT_PX = 3
#: Largest ``min_confident_px`` accepted (a limit above the grains' own size means nothing).
MAX_MIN_CONFIDENT_PX = 1000


def pixel_classes(labels: np.ndarray) -> np.ndarray:
    """Class of every pixel: 2 junction (three or more non-zero labels in its 3 × 3 neighbourhood,
    itself included), 1 boundary (two), 0 interior (one or none).

    Parameters
    ----------
    labels : (ny, nx) int array
        Grain labels, 0 = none.

    Returns
    -------
    (ny, nx) int8 array
    """
    lab = np.asarray(labels, dtype=np.int64)
    ny, nx = lab.shape
    pad = np.pad(lab, 1, mode="constant")
    stack = np.sort(
        np.stack([pad[1 + dy : 1 + dy + ny, 1 + dx : 1 + dx + nx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)]), axis=0
    )
    distinct = (stack[0] > 0).astype(np.int64) + np.sum((stack[1:] != stack[:-1]) & (stack[1:] > 0), axis=0)
    return np.clip(distinct - 1, 0, 2).astype(np.int8)


def low_ci_rates(sections) -> tuple[float, float, float]:
    """Fraction of non-confident pixels among the junction, boundary and interior pixels of the
    particle masks, pooled over sections (step 1 of the module docstring).

    Parameters
    ----------
    sections : iterable of (labels, mask, confident)
        Label map, particle mask and confident pixels (bool, or None: all confident) of each section.

    Returns
    -------
    (float, float, float)
        ``(p_junction, p_boundary, p_interior)``; a class with no pixel gets 0.
    """
    lost = np.zeros(3)
    total = np.zeros(3)
    for labels, mask, confident in sections:
        mask = np.asarray(mask, dtype=bool)
        cls = pixel_classes(labels)[mask]
        total += np.bincount(cls, minlength=3)[:3]
        if confident is not None:
            bad = ~np.asarray(confident, dtype=bool)[mask]
            lost += np.bincount(cls[bad], minlength=3)[:3]
    rates = np.divide(lost, total, out=np.zeros(3), where=total > 0)
    return tuple(float(r) for r in rates[::-1])  # classes are 0 interior, 1 boundary, 2 junction


def simulate_confident(labels: np.ndarray, mask: np.ndarray, rates, rng) -> np.ndarray:
    """Draw the confident pixels of a section under the loss ``rates`` (step 2 of the module
    docstring).

    Parameters
    ----------
    labels : (ny, nx) int array
        Grain labels of the section (its classes decide each pixel's probability).
    mask : (ny, nx) bool array
        Particle section; pixels outside it are not confident.
    rates : (3,) sequence of float
        ``(p_junction, p_boundary, p_interior)``, each in [0, 1].
    rng : numpy.random.Generator
        Source of the draws (nothing is drawn when every rate is 0).

    Returns
    -------
    (ny, nx) bool array
    """
    mask = np.asarray(mask, dtype=bool)
    p = np.asarray(rates, dtype=np.float64).reshape(3)
    if not np.any(p > 0):
        return mask.copy()
    lose = rng.uniform(size=mask.shape) < p[::-1][pixel_classes(labels)]
    return mask & ~lose


def confident_counts(labels: np.ndarray, confident: np.ndarray) -> np.ndarray:
    """Confident pixels per label (index = label; row 0 counts the unlabelled ones).

    Parameters
    ----------
    labels : (ny, nx) int array
        Grain labels, 0 = none.
    confident : (ny, nx) bool array
        Confident pixels.

    Returns
    -------
    (max label + 1,) int64 array
    """
    lab = np.asarray(labels, dtype=np.int64)
    return np.bincount(lab[np.asarray(confident, dtype=bool)], minlength=int(lab.max(initial=0)) + 1)


def detected(labels: np.ndarray, confident: np.ndarray | None, min_confident_px: int) -> np.ndarray:
    """Labels of the grains with at least ``min_confident_px`` confident pixels (step 3 of the
    module docstring).

    Parameters
    ----------
    labels : (ny, nx) int array
        Grain labels, 0 = none.
    confident : (ny, nx) bool array or None
        Confident pixels (None: all pixels).
    min_confident_px : int
        The criterion's ``k``.

    Returns
    -------
    1-D int64 array
        Sorted labels (> 0) that count.
    """
    lab = np.asarray(labels, dtype=np.int64)
    conf = np.ones(lab.shape, bool) if confident is None else np.asarray(confident, dtype=bool)
    n = confident_counts(lab, conf)
    present = np.bincount(lab.ravel(), minlength=len(n)) > 0
    keep = present & (n >= int(min_confident_px))
    keep[0] = False
    return np.flatnonzero(keep).astype(np.int64)


def check_min_confident_px(value, what: str = "--min-confident-px") -> int:
    """``value`` as the criterion's ``k`` (an integer in [0, :data:`MAX_MIN_CONFIDENT_PX`]; 0 = off).

    Parameters
    ----------
    value : int
        The requested ``k``.
    what : str
        The option's name in the error message.

    Returns
    -------
    int

    Raises
    ------
    InputError
        Not an integer in range.
    """
    try:
        k = int(value)
        ok = k == float(value) and 0 <= k <= MAX_MIN_CONFIDENT_PX
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"{what} must be an integer in [0, {MAX_MIN_CONFIDENT_PX}] (0 = off), got {value!r}")
    return k


@dataclasses.dataclass(frozen=True)
class DetectionLimit:
    """The measured sections' instrument loss and the criterion, to apply to another side.

    Parameters
    ----------
    rates : (float, float, float)
        ``(p_junction, p_boundary, p_interior)`` (:func:`low_ci_rates`).
    min_confident_px : int
        The criterion's ``k`` (0: the limit is off).
    """

    rates: tuple
    min_confident_px: int = DEFAULT_MIN_CONFIDENT_PX

    @property
    def active(self) -> bool:
        """Whether the limit changes anything: some loss and ``k >= 1``."""
        return self.min_confident_px >= 1 and any(r > 0 for r in self.rates)

    @property
    def criterion(self) -> int:
        """The ``k`` that applies: ``min_confident_px`` when the limit is active, else 0 (no criterion)."""
        return int(self.min_confident_px) if self.active else 0

    def confident(self, labels: np.ndarray, mask: np.ndarray, rng) -> np.ndarray | None:
        """Simulated confident pixels of another side's section (None when the limit is off).

        Parameters
        ----------
        labels : (ny, nx) int array
            The section's grain labels.
        mask : (ny, nx) bool array
            Its particle mask.
        rng : numpy.random.Generator
            Source of the draws.

        Returns
        -------
        (ny, nx) bool array or None
        """
        if not self.active:
            return None
        return simulate_confident(labels, mask, self.rates, rng)

    def to_dict(self) -> dict:
        """JSON form: rates by class and ``min_confident_px``."""
        j, b, i = self.rates
        return {
            "low_ci_rates": {"junction": j, "boundary": b, "interior": i},
            "min_confident_px": int(self.min_confident_px),
            "active": self.active,
        }


__all__ = [
    "DEFAULT_MIN_CONFIDENT_PX",
    "MAX_MIN_CONFIDENT_PX",
    "DetectionLimit",
    "check_min_confident_px",
    "confident_counts",
    "detected",
    "low_ci_rates",
    "pixel_classes",
    "simulate_confident",
]


def complete_as_imported(
    labels: np.ndarray,
    mask: np.ndarray,
    confident: np.ndarray,
    min_grain_px: int = 5,
    gap_px: int = DEFAULT_GAP_PX,
    reach_px: int = DEFAULT_REACH_PX,
    iterations: int = DEFAULT_FILL_ITERATIONS,
) -> np.ndarray:
    """The map ``import-ebsd --fill shape`` would make of a section whose confident pixels are
    ``confident`` (the instrument's loss simulated on a known label map).

    The regions are the 4-connected components of each grain's confident pixels (what the
    misorientation graph gives: two grains' orientations never agree within the join threshold,
    one grain's pixels always do). Two regions of one grain are bridged when a 4-path of at most
    ``gap_px`` unassigned pixels joins them (:func:`~nmc_dataset.ebsd._completion.bridge_pairs`);
    grains whose completed area is under ``min_grain_px`` are dropped and the map is filled by
    :func:`~nmc_dataset.ebsd._completion.shape_fill`, as in
    :func:`~nmc_dataset.ebsd._completion.complete_grains`.

    Parameters
    ----------
    labels : (ny, nx) int array
        True (or modelled) grain labels.
    mask : (ny, nx) bool array
        Particle section.
    confident : (ny, nx) bool array
        Pixels the instrument indexes with confidence.
    min_grain_px : int
        The import's ``--min-grain-px``.
    gap_px, reach_px, iterations : int
        As in :func:`~nmc_dataset.ebsd._completion.complete_grains`.

    Returns
    -------
    (ny, nx) uint32
        Completed labels 1..n, every pixel of ``mask`` assigned (0 outside).
    """
    lab = np.asarray(labels, dtype=np.int64)
    mask = np.asarray(mask, dtype=bool)
    keep = mask & np.asarray(confident, dtype=bool) & (lab > 0)
    structure = ndimage.generate_binary_structure(2, 1)
    regions = np.zeros(lab.shape, dtype=np.int64)
    nxt = 0
    for g in np.unique(lab[keep]):
        comp, k = ndimage.label(keep & (lab == g), structure=structure)
        regions[comp > 0] = comp[comp > 0] + nxt
        nxt += k
    if nxt == 0:
        return np.zeros(lab.shape, dtype=np.uint32)
    owner = np.zeros(nxt + 1, dtype=np.int64)
    owner[regions[keep]] = lab[keep]
    pairs = bridge_pairs(regions, gap_px)
    if len(pairs):
        pairs = pairs[owner[pairs[:, 0]] == owner[pairs[:, 1]]]
    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(nxt + 1, nxt + 1))
    _, comp = connected_components(graph, directed=False)
    own = relabel_by_first_appearance(np.where(regions > 0, comp[regions] + 1, 0))
    if int(min_grain_px) > 1 and own.max() > 0:
        size = np.bincount(shape_fill(own, mask, reach_px, iterations).ravel(), minlength=int(own.max()) + 1)
        survive = size >= int(min_grain_px)
        survive[0] = False
        own = relabel_by_first_appearance(np.where(survive[own], own, 0))
    return relabel_by_first_appearance(shape_fill(own, mask, reach_px, iterations))


def calibrate_rates(
    measured, sections, rng, iterations: int = 4, min_grain_px: int = 5, start=None
) -> tuple[float, float, float]:
    """The instrument's loss rates on the true grain map, found by reproducing the rates measured
    on the completed data on another side's sections (indirect inference).

    The rates :func:`low_ci_rates` measures on a completed map are not the instrument's: the
    completion moves the junctions of the lost pixels, so that many of them count as boundary
    pixels of the completed map, and grains that vanished take their junctions with them. The
    same measurement is therefore applied to the other side: the loss ``r`` is drawn on its
    sections (:func:`simulate_confident`), they are completed as the import would
    (:func:`complete_as_imported`) and the rates ``m(r)`` of the completed maps are measured;
    ``r`` moves by ``measured - m(r)`` (clipped to [0, 1]) ``iterations`` times, starting from
    ``start`` (default ``measured``).

    Parameters
    ----------
    measured : (3,) sequence of float
        ``low_ci_rates`` of the measured (completed) sections.
    sections : sequence of (labels, mask)
        The other side's sections (true or modelled grain labels, particle mask).
    rng : numpy.random.Generator
        Source of the simulated losses.
    iterations : int
        Fixed-point steps (0: ``measured`` as it is).
    min_grain_px : int
        The import's ``--min-grain-px``.
    start : (3,) sequence of float, optional
        First estimate (e.g. the last one, when the other side changes little).

    Returns
    -------
    (float, float, float)
        ``(p_junction, p_boundary, p_interior)``; all 0 (and nothing drawn) when no pixel was lost.
    """
    target = np.clip(np.asarray(measured, dtype=np.float64).reshape(3), 0.0, 1.0)
    if not np.any(target > 0):
        return (0.0, 0.0, 0.0)
    sections = [(np.asarray(lab), np.asarray(m, bool)) for lab, m in sections]
    r = target.copy() if start is None else np.clip(np.asarray(start, dtype=np.float64).reshape(3), 0.0, 1.0)
    for _ in range(int(iterations)):
        sim = []
        for lab, m in sections:
            conf = simulate_confident(lab, m, r, rng)
            sim.append((complete_as_imported(lab, m, conf, min_grain_px), m, conf))
        r = np.clip(r + (target - np.asarray(low_ci_rates(sim))), 0.0, 1.0)
    return tuple(float(v) for v in r)
