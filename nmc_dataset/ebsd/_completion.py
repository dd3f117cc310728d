"""Completing a grain map across unindexed pixels (docs/ebsd.md#completing-the-grain-map).

EBSD leaves the pixels where patterns overlap unindexed or with a low confidence index: grain
junctions, boundaries, and most of a thin grain. Measured on the confident pixels alone, grains
lose their tips (the pixels at their triple junctions) and come out rounder and smaller; thin or
small grains fall apart into fragments of a few pixels, which the minimum-size filter then
removes. Two steps restore what those pixels removed, using only the confident pixels (the
solutions of pixels under the CI threshold are wrong too often to decide anything):

1. **Bridging fragments** (:func:`bridge_fragments`). Two regions of confident pixels (the
   connected components of the misorientation graph) are one grain when they come within
   ``gap_px + 1`` steps of each other through unassigned pixels only (a 4-connected path of
   at most ``gap_px`` unassigned pixels joins a pixel of each) and their mean orientations
   are closer than the join threshold (symmetry-reduced misorientation). This is the
   grain-tolerance rule of the EBSD software, applied across the gap instead of only between
   touching pixels.
2. **Shape-aware filling** (:func:`shape_fill`). Every unassigned pixel of the particle section
   takes one of the grains whose own pixels lie within ``reach_px`` (Chebyshev) of it: the one
   that minimises the normalised elliptical distance
   ``d_g(p) = u² / (4 λ1_g) + v² / (4 λ2_g)``, with ``(u, v)`` the offset of ``p`` from the
   grain's centroid along its principal axes and ``λ1 ≥ λ2`` the eigenvalues of its
   second-moment matrix (the ellipse of the same moments has its rim at ``d = 1``). The moments
   are those of the completed grains, re-estimated ``iterations`` times (start: nearest-pixel
   filling). A power-diagram-like rule with each grain's own shape, it extends an elongated
   grain along its axis into the junction where nearest-pixel filling (a Voronoi diagram of the
   pixels) cuts its tip off. Pixels with no grain within reach keep the nearest-pixel grain.

Grains whose completed area is under ``min_grain_px`` are then dropped and their pixels filled
the same way (:func:`complete_grains`).
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from nmc_dataset.ebsd._orientation import grain_mean_orientations, misorientation_angle
from nmc_dataset.ebsd._reconstruct import dilate_grains, relabel_by_first_appearance

#: Default longest run of unassigned pixels a bridge between two fragments may cross.
DEFAULT_GAP_PX = 3
#: Default Chebyshev reach (pixels) of the grains a gap pixel may join in :func:`shape_fill`.
DEFAULT_REACH_PX = 4
#: Default number of moment re-estimations in :func:`shape_fill`.
DEFAULT_FILL_ITERATIONS = 3


def _shifted(a: np.ndarray, dy: int, dx: int, fill) -> np.ndarray:
    """``out[y, x] = a[y + dy, x + dx]`` (``fill`` outside the image)."""
    ny, nx = a.shape
    out = np.full_like(a, fill)
    if abs(dy) >= ny or abs(dx) >= nx:
        return out
    out[max(0, -dy) : ny - max(0, dy), max(0, -dx) : nx - max(0, dx)] = a[
        max(0, dy) : ny - max(0, -dy), max(0, dx) : nx - max(0, -dx)
    ]
    return out


def _monotone_paths(dy: int, dx: int):
    """The interior pixels (offsets) of every shortest 4-connected path from (0, 0) to (dy, dx)."""
    steps = [(int(np.sign(dy)), 0)] * abs(dy) + [(0, int(np.sign(dx)))] * abs(dx)
    seen = set()
    for order in itertools.permutations(range(len(steps))):
        seq = tuple(steps[i] for i in order)
        if seq in seen:
            continue
        seen.add(seq)
        pos, interior = (0, 0), []
        for s in seq[:-1]:
            pos = (pos[0] + s[0], pos[1] + s[1])
            interior.append(pos)
        yield interior


def bridge_pairs(labels: np.ndarray, gap_px: int = DEFAULT_GAP_PX) -> np.ndarray:
    """Pairs of labels joined by a shortest 4-path through at most ``gap_px`` unassigned pixels.

    Parameters
    ----------
    labels : (ny, nx) int array
        0 = unassigned.
    gap_px : int
        Longest run of unassigned pixels crossed (0: none, only touching labels count).

    Returns
    -------
    (P, 2) int64 array
        Unique pairs ``a < b``.
    """
    lab = np.asarray(labels, dtype=np.int64)
    free = lab == 0
    out = []
    reach = int(gap_px) + 1
    for dy in range(0, reach + 1):
        for dx in range(-reach, reach + 1):
            if (dy == 0 and dx <= 0) or abs(dy) + abs(dx) > reach:
                continue
            other = _shifted(lab, dy, dx, 0)
            cand = (lab > 0) & (other > 0) & (lab != other)
            if not cand.any():
                continue
            open_path = np.zeros(lab.shape, dtype=bool)
            for interior in _monotone_paths(dy, dx):
                ok = cand.copy()
                for iy, ix in interior:
                    ok &= _shifted(free, iy, ix, False)
                open_path |= ok
            if open_path.any():
                a, b = lab[open_path], other[open_path]
                out.append(np.stack([np.minimum(a, b), np.maximum(a, b)], 1))
    if not out:
        return np.zeros((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(out), axis=0)


def bridge_fragments(
    labels: np.ndarray,
    quat: np.ndarray,
    phase: np.ndarray,
    ops_by_phase: dict,
    max_misorientation_rad: float,
    gap_px: int = DEFAULT_GAP_PX,
) -> np.ndarray:
    """Merge regions of confident pixels that a short unindexed gap separates and whose mean
    orientations agree (step 1 of the module docstring).

    Parameters
    ----------
    labels : (ny, nx) int array
        Regions of confident pixels (0 = unassigned), e.g. from
        :func:`~nmc_dataset.ebsd._reconstruct.label_by_misorientation` with ``min_grain_px=1``.
    quat : (ny, nx, 4) array
        Pixel orientations.
    phase : (ny, nx) int array
        Phase per pixel; regions of different phases never merge.
    ops_by_phase : dict
        Phase id → proper symmetry rotations (K, 4).
    max_misorientation_rad : float
        Regions merge when their mean orientations are closer than this.
    gap_px : int
        Longest run of unassigned pixels a bridge crosses.

    Returns
    -------
    (ny, nx) uint32
        Relabelled 1..n in raster order of first appearance.
    """

    lab = np.asarray(labels, dtype=np.int64)
    n = int(lab.max()) + 1 if lab.size else 1
    pairs = bridge_pairs(lab, gap_px)
    if len(pairs) == 0:
        return relabel_by_first_appearance(lab)
    flat = lab.ravel()
    sel = np.flatnonzero(flat)
    region_phase = np.zeros(n, dtype=np.int64)
    region_phase[flat[sel]] = np.asarray(phase).ravel()[sel]
    same = region_phase[pairs[:, 0]] == region_phase[pairs[:, 1]]
    join = np.zeros(len(pairs), dtype=bool)
    for pid, ops in ops_by_phase.items():
        s = same & (region_phase[pairs[:, 0]] == pid)
        if not s.any():
            continue
        rl = np.where(region_phase[lab] == pid, lab, 0)
        means = grain_mean_orientations(quat, rl, ops)
        means = np.vstack([means, np.full((max(n - len(means), 0), 4), np.nan)])
        join[s] = misorientation_angle(means[pairs[s, 0]], means[pairs[s, 1]], ops) < max_misorientation_rad
    pairs = pairs[join]
    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    return relabel_by_first_appearance(np.where(lab > 0, comp[lab] + 1, 0))


def _label_moments(labels: np.ndarray, n: int):
    """Centroid (x, y), unit major axis and eigenvalues (λ1 ≥ λ2, pixels counted as unit squares)
    of every label 0..n-1 (label 0 and absent labels get harmless placeholders)."""
    flat = labels.ravel()
    ny, nx = labels.shape
    y = np.repeat(np.arange(ny, dtype=np.float64), nx)
    x = np.tile(np.arange(nx, dtype=np.float64), ny)
    cnt = np.bincount(flat, minlength=n).astype(np.float64)
    w = np.maximum(cnt, 1.0)
    mx = np.bincount(flat, x, n) / w
    my = np.bincount(flat, y, n) / w
    dx, dy = x - mx[flat], y - my[flat]
    cxx = np.bincount(flat, dx * dx, n) / w + 1.0 / 12.0
    cyy = np.bincount(flat, dy * dy, n) / w + 1.0 / 12.0
    cxy = np.bincount(flat, dx * dy, n) / w
    tr = 0.5 * (cxx + cyy)
    d = np.sqrt((0.5 * (cxx - cyy)) ** 2 + cxy**2)
    theta = 0.5 * np.arctan2(2.0 * cxy, cxx - cyy)
    return mx, my, np.cos(theta), np.sin(theta), tr + d, np.maximum(tr - d, 1.0 / 12.0)


def shape_fill(
    labels: np.ndarray,
    mask: np.ndarray,
    reach_px: int = DEFAULT_REACH_PX,
    iterations: int = DEFAULT_FILL_ITERATIONS,
    chunk: int = 1 << 15,
) -> np.ndarray:
    """Give every unassigned pixel of ``mask`` a grain by each grain's own shape (step 2 of the
    module docstring).

    Parameters
    ----------
    labels : (ny, nx) int array
        0 = unassigned; the assigned pixels never change.
    mask : (ny, nx) bool array
        Pixels to complete (the particle section); others keep their label.
    reach_px : int
        Candidate grains of a pixel: those with an assigned pixel within this Chebyshev distance.
    iterations : int
        Moment re-estimations (0: nearest-pixel filling, :func:`dilate_grains`).
    chunk : int
        Unassigned pixels per vectorised block (bounds memory on large maps).

    Returns
    -------
    (ny, nx) array of the labels' dtype
        Every pixel of ``mask`` assigned where any label exists.
    """
    lab = np.asarray(labels)
    mask = np.asarray(mask, dtype=bool)
    out = dilate_grains(lab, mask, np.inf)
    free = mask & (lab == 0)
    if not free.any() or not (lab > 0).any() or iterations <= 0:
        return out
    ys, xs = np.nonzero(free)
    ny, nx = lab.shape
    r = int(reach_px)
    offsets = [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)]
    n = int(max(lab.max(), out.max())) + 1
    for _ in range(int(iterations)):
        mx, my, ax, ay, l1, l2 = _label_moments(out.astype(np.int64), n)
        new = out[ys, xs].copy()
        for start in range(0, len(ys), chunk):
            py, px = ys[start : start + chunk], xs[start : start + chunk]
            cand = np.stack(
                [lab[np.clip(py + dy, 0, ny - 1), np.clip(px + dx, 0, nx - 1)] for dy, dx in offsets], axis=1
            ).astype(np.int64)
            u0 = px[:, None] - mx[cand]
            v0 = py[:, None] - my[cand]
            u = u0 * ax[cand] + v0 * ay[cand]
            v = -u0 * ay[cand] + v0 * ax[cand]
            dist = u * u / (4.0 * l1[cand]) + v * v / (4.0 * l2[cand])
            dist[cand == 0] = np.inf
            k = np.argmin(dist, axis=1)
            best = cand[np.arange(len(py)), k]
            found = np.isfinite(dist[np.arange(len(py)), k])
            new[start : start + chunk] = np.where(found, best, new[start : start + chunk])
        out[ys, xs] = new
    return out


def complete_grains(
    regions: np.ndarray,
    quat: np.ndarray,
    phase: np.ndarray,
    mask: np.ndarray,
    ops_by_phase: dict,
    max_misorientation_rad: float,
    min_grain_px: int = 1,
    gap_px: int = DEFAULT_GAP_PX,
    reach_px: int = DEFAULT_REACH_PX,
    iterations: int = DEFAULT_FILL_ITERATIONS,
) -> np.ndarray:
    """Bridge fragments, drop grains whose completed area is under ``min_grain_px``, fill.

    Parameters
    ----------
    regions : (ny, nx) int array
        Regions of confident pixels (0 = unassigned), any size.
    quat, phase, ops_by_phase, max_misorientation_rad, gap_px :
        As in :func:`bridge_fragments`.
    mask : (ny, nx) bool array
        The particle section (completed; pixels outside stay 0).
    min_grain_px : int
        Grains with fewer completed pixels are dropped (their pixels filled by the others).
    reach_px, iterations :
        As in :func:`shape_fill`.

    Returns
    -------
    (ny, nx) uint32
        Grain labels 1..n (raster order of first appearance), every pixel of ``mask`` assigned.
    """
    mask = np.asarray(mask, dtype=bool)
    own = bridge_fragments(np.where(mask, regions, 0), quat, phase, ops_by_phase, max_misorientation_rad, gap_px)
    if int(min_grain_px) > 1 and own.max() > 0:
        size = np.bincount(shape_fill(own, mask, reach_px, iterations).ravel(), minlength=int(own.max()) + 1)
        survive = size >= int(min_grain_px)
        survive[0] = False
        own = relabel_by_first_appearance(np.where(survive[own], own, 0))
    return relabel_by_first_appearance(shape_fill(own, mask, reach_px, iterations))


__all__ = [
    "DEFAULT_GAP_PX",
    "DEFAULT_REACH_PX",
    "DEFAULT_FILL_ITERATIONS",
    "bridge_pairs",
    "bridge_fragments",
    "shape_fill",
    "complete_grains",
]
