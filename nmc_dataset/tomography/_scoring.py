"""Scores of a segmentation against exact labels: accuracy, boundaries, topology and particle instances.

All metrics compare two label volumes of one grid (axes ``z, y, x``): a predicted and a true
``phase`` volume (0 pore, 1 NMC, 2 binder) and predicted and true ``particle`` instance volumes.

Accuracy, per phase ``p`` with truth set ``T`` and prediction ``P``:
    Dice = 2|T∩P| / (|T|+|P|),   IoU = |T∩P| / |T∪P|   (from one confusion matrix).

Boundary error, per phase: the surface ``∂T`` is the set of voxels of the phase with at least one
face neighbour (inside the volume) of another phase; the faces of the volume are not surfaces. With
``d(x, S)`` the Euclidean distance from voxel ``x`` to the nearest voxel of ``S`` (in µm), the mean
symmetric surface distance is

    ASSD = (Σ_{x∈∂T} d(x, ∂P) + Σ_{y∈∂P} d(y, ∂T)) / (|∂T| + |∂P|)

and ``hd95`` is the larger of the two directed 95th percentiles (the robust Hausdorff distance).
Voxels on both surfaces have distance 0; the others are found exactly by a compiled search of the
integer offsets of a small ball in order of length (the first hit is the nearest surface voxel) and,
beyond the ball, by one exact distance transform of the other surface when many voxels are that far
(:func:`nmc_dataset.tomography._edt.distance_to`), else a wider ball and a k-d tree of the surface voxels
(:class:`scipy.spatial.cKDTree`) (see :func:`surface_distances`): several times faster
than full-volume distance transforms, because segmentation errors are mostly near the surfaces.

Topology, per phase, with face (6-) connectivity of the phase voxels (the connectivity that carries
ionic or electronic current; the complement is then 26-connected, as the Euler characteristic needs):
the number of connected components (:func:`scipy.ndimage.label`), the Euler characteristic
χ = components − tunnels + cavities (the 2×2×2-configuration count of
:func:`skimage.measure.euler_number` with ``connectivity=1``, in :mod:`nmc_dataset.tomography._fast`), and
per axis whether one component touches both opposite faces of the volume (the phase percolates),
with the fraction of the phase in such components.

Particle instances: with ``o(t, p)`` the voxels shared by true instance ``t`` and predicted ``p``,
``t`` and ``p`` *match* when IoU(t, p) = o / (|t| + |p| − o) > 0.5 (a match is unique). A predicted
instance *belongs* to ``t`` when more than half of it lies in ``t``; a true instance is *split* when
two or more predicted instances belong to it. Symmetrically a true instance belongs to ``p`` when
more than half of it lies in ``p``, and a predicted instance is a *merge* when two or more true ones
belong to it. Precision, recall and F1 count matches; ``missed`` true and ``false`` predicted instances
are the unmatched ones.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from nmc_dataset.tomography._fast import band_search, euler_number_6, label_sizes
from nmc_dataset.tomography._volumes import PHASES

__all__ = [
    "confusion",
    "inner_surfaces",
    "instance_scores",
    "percolation",
    "phase_topology",
    "score_segmentation",
    "surface_distances",
]

AXES = ("z", "y", "x")


def confusion(truth: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Confusion matrix ``C[t, p]`` = voxels with true class ``t`` and predicted class ``p``."""
    t = np.asarray(truth).ravel().astype(np.intp)
    p = np.asarray(pred).ravel().astype(np.intp)
    if t.size and (t.max() >= n_classes or p.max() >= n_classes):
        raise ValueError(f"class labels must be < {n_classes}")
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def inner_surfaces(labels: np.ndarray) -> np.ndarray:
    """Boolean volume: voxels with a face neighbour (inside the volume) of another label."""
    lab = np.asarray(labels)
    surf = np.zeros(lab.shape, dtype=bool)
    for axis in range(lab.ndim):
        n = lab.shape[axis]
        if n < 2:
            continue
        a = [slice(None)] * lab.ndim
        b = [slice(None)] * lab.ndim
        a[axis], b[axis] = slice(0, n - 1), slice(1, n)
        diff = lab[tuple(a)] != lab[tuple(b)]
        surf[tuple(a)] |= diff
        surf[tuple(b)] |= diff
    return surf


def _offsets(radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer offsets within ``radius`` (origin excluded), sorted by length, and their lengths."""
    r = int(radius)
    g = np.mgrid[-r : r + 1, -r : r + 1, -r : r + 1].reshape(3, -1).T
    d2 = (g**2).sum(axis=1)
    keep = (d2 > 0) & (d2 <= r * r)
    g, d2 = g[keep], d2[keep]
    order = np.argsort(d2, kind="stable")
    return g[order], np.sqrt(d2[order])


def _search(src_idx, dst_mask, radius):
    """Compiled ball search: distance to the nearest ``dst_mask`` voxel within ``radius``, else -1."""

    offs, lens = _offsets(radius)
    pshape = np.array(dst_mask.shape) + 2 * radius
    strides = np.array([pshape[1] * pshape[2], pshape[2], 1])
    padded = np.pad(dst_mask, radius).ravel()
    coords = np.column_stack(np.unravel_index(src_idx, dst_mask.shape)) + radius
    found = np.empty(src_idx.size)
    band_search(padded, coords @ strides, offs @ strides, lens, found)
    return found


def surface_distances(
    surf_truth: np.ndarray,
    surf_pred: np.ndarray,
    spacing: float = 1.0,
    *,
    band: int = 3,
    far_band: int = 10,
    max_far: int = 20000,
):
    """Directed distances (in units of ``spacing``) of two surfaces (boolean volumes).

    Exact Euclidean distances: a voxel on both surfaces has distance 0; the others look for the
    other surface at the integer offsets within ``band`` voxels in order of length (the first hit is
    the nearest voxel). If more than ``max_far`` voxels remain, one exact distance transform of the
    other surface answers them; otherwise a search within ``far_band`` voxels, and a k-d tree of the
    other surface for what is farther still.

    Returns
    -------
    d_tp : ndarray
        For every voxel of ``surf_truth`` (C order), the distance to the nearest ``surf_pred`` voxel.
    d_pt : ndarray
        For every voxel of ``surf_pred``, the distance to the nearest ``surf_truth`` voxel.
    Both are empty when either surface is empty.
    """

    t_idx = np.flatnonzero(surf_truth)
    p_idx = np.flatnonzero(surf_pred)
    if t_idx.size == 0 or p_idx.size == 0:
        return np.zeros(0), np.zeros(0)

    def directed(src_idx, dst_mask, dst_idx):
        d = np.zeros(src_idx.size)
        todo = np.flatnonzero(~dst_mask.ravel()[src_idx])
        if todo.size and band > 0:
            d[todo] = _search(src_idx[todo], dst_mask, band)
            todo = todo[d[todo] < 0]
        if todo.size > max_far:  # many far voxels: one distance transform
            from nmc_dataset.tomography._edt import distance_to

            d[todo] = distance_to(dst_mask).ravel()[src_idx[todo]]
            return d
        if todo.size and far_band > band:
            d[todo] = _search(src_idx[todo], dst_mask, far_band)
            todo = todo[d[todo] < 0]
        if todo.size:
            dst = np.column_stack(np.unravel_index(dst_idx, dst_mask.shape)).astype(np.float64)
            tree = cKDTree(dst, balanced_tree=False, compact_nodes=False)
            q = np.column_stack(np.unravel_index(src_idx[todo], dst_mask.shape)).astype(np.float64)
            d[todo], _ = tree.query(q, workers=-1)
        return d

    return directed(t_idx, surf_pred, p_idx) * spacing, directed(p_idx, surf_truth, t_idx) * spacing


def percolation(components: np.ndarray) -> tuple[dict, dict]:
    """Per axis, whether a component of a label volume touches both opposite faces.

    Returns
    -------
    percolates : dict axis name -> bool
    fraction : dict axis name -> float
        Fraction of the labelled voxels in the components that percolate along that axis.
    """
    sizes = label_sizes(components)
    total = int(sizes[1:].sum())
    perc, frac = {}, {}
    for axis, name in enumerate(AXES):
        lo = np.unique(components.take(0, axis=axis))
        hi = np.unique(components.take(-1, axis=axis))
        both = np.intersect1d(lo, hi)
        both = both[both != 0]
        perc[name] = bool(both.size)
        frac[name] = float(sizes[both].sum() / total) if total else 0.0
    return perc, frac


def phase_topology(mask: np.ndarray) -> dict:
    """Components, Euler characteristic and percolation of one phase (boolean volume), 6-connected."""

    mask = np.asarray(mask, dtype=bool)
    comps, n = ndimage.label(mask)
    perc, frac = percolation(comps)
    return {
        "components": int(n),
        "euler": euler_number_6(mask) if mask.any() else 0,
        "percolates": perc,
        "percolating_fraction": frac,
    }


def instance_scores(truth: np.ndarray, pred: np.ndarray, *, match_iou: float = 0.5) -> dict:
    """Match particle instances by overlap; count splits and merges (see the module docs).

    Parameters
    ----------
    truth, pred : ndarray of int
        Instance label volumes (0 = no particle); ids need not be consecutive.
    match_iou : float
        IoU above which a pair matches (0.5 makes matches unique).

    Returns
    -------
    dict
        Counts (``n_truth``, ``n_pred``, ``matched``, ``missed``, ``false``, ``split_truth``,
        ``split_pieces``, ``merged_pred``, ``merged_truth``), ``precision``, ``recall``, ``f1``,
        ``mean_matched_iou``, and the id lists ``split_ids`` (true) and ``merge_ids`` (predicted).
    """
    t_ids, t_inv, t_size = _dense_ids(np.asarray(truth).ravel())
    p_ids, p_inv, p_size = _dense_ids(np.asarray(pred).ravel())
    both = (t_inv != 0) & (p_inv != 0)
    key = t_inv[both].astype(np.int64) * len(p_ids) + p_inv[both]
    pairs, overlap = np.unique(key, return_counts=True)
    ti, pi = pairs // len(p_ids), pairs % len(p_ids)
    iou = overlap / (t_size[ti] + p_size[pi] - overlap)
    m = iou > match_iou
    p_to_t = overlap > 0.5 * p_size[pi]  # predicted instance pi lies mostly in ti
    t_to_p = overlap > 0.5 * t_size[ti]  # true instance ti lies mostly in pi
    n_t = int(np.count_nonzero(t_ids))
    n_p = int(np.count_nonzero(p_ids))
    pieces = np.bincount(ti[p_to_t], minlength=len(t_ids))
    absorbed = np.bincount(pi[t_to_p], minlength=len(p_ids))
    split = np.flatnonzero(pieces >= 2)
    merge = np.flatnonzero(absorbed >= 2)
    matched = int(m.sum())
    prec = matched / n_p if n_p else 0.0
    rec = matched / n_t if n_t else 0.0
    return {
        "n_truth": n_t,
        "n_pred": n_p,
        "matched": matched,
        "missed": n_t - matched,
        "false": n_p - matched,
        "precision": prec,
        "recall": rec,
        "f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0,
        "mean_matched_iou": float(iou[m].mean()) if matched else 0.0,
        "split_truth": int(split.size),
        "split_pieces": int(pieces[split].sum()),
        "merged_pred": int(merge.size),
        "merged_truth": int(absorbed[merge].sum()),
        "split_ids": [int(v) for v in t_ids[split]],
        "merge_ids": [int(v) for v in p_ids[merge]],
    }


def _dense_ids(labels: np.ndarray):
    """Ids present (0 first), labels mapped to 0..n-1 and the size of each; counting sort when ids are small."""
    top = int(labels.max()) if labels.size else 0
    if top < 4 * labels.size + 1024:
        counts = np.bincount(labels, minlength=1)
        ids = np.flatnonzero(counts)
        if ids[0] != 0:
            ids = np.concatenate([[0], ids])
        lut = np.zeros(top + 1, dtype=np.int32)
        lut[ids] = np.arange(ids.size)
        return ids, lut[labels], counts[ids]
    ids, inv = np.unique(np.concatenate([[0], labels]), return_inverse=True)
    inv = inv[1:]
    return ids, inv, np.bincount(inv, minlength=ids.size)


def score_segmentation(
    pred_phase: np.ndarray,
    true_phase: np.ndarray,
    pred_particle: np.ndarray | None = None,
    true_particle: np.ndarray | None = None,
    *,
    voxel_size_um: float = 1.0,
    phases: dict | None = None,
) -> dict:
    """Every score of a predicted segmentation against the truth.

    Parameters
    ----------
    pred_phase, true_phase : ndarray of uint8
        Phase labels (keys of ``phases``).
    pred_particle, true_particle : ndarray of int, optional
        Particle instance labels; the ``particles`` section is left out without them.
    voxel_size_um : float
        Scales the surface distances to µm.
    phases : dict int -> str, optional
        Phase names (default 0 pore, 1 nmc, 2 binder).

    Returns
    -------
    dict
        ``voxel_accuracy``, ``mean_dice`` (over phases present in the truth), ``phases`` (per name:
        ``dice``, ``iou``, ``fraction_truth``, ``fraction_pred``, ``boundary`` {``assd_um``,
        ``hd95_um``, ``max_um``}, ``topology`` {``truth``, ``pred``}) and ``particles``.
    """
    phases = dict(PHASES if phases is None else phases)
    if pred_phase.shape != true_phase.shape:
        raise ValueError(f"shape mismatch {pred_phase.shape} vs {true_phase.shape}")
    k = max(phases) + 1
    cm = confusion(true_phase, pred_phase, k)
    n = cm.sum()
    s_t = inner_surfaces(true_phase)
    s_p = inner_surfaces(pred_phase)
    out = {
        "shape": list(true_phase.shape),
        "voxel_size_um": float(voxel_size_um),
        "voxel_accuracy": float(np.trace(cm) / n),
        "phases": {},
    }
    dices = []
    for value, name in phases.items():
        tp = int(cm[value, value])
        nt, npred = int(cm[value].sum()), int(cm[:, value].sum())
        union = nt + npred - tp
        dice = 2 * tp / (nt + npred) if nt + npred else 1.0
        if nt:
            dices.append(dice)
        mt = true_phase == value
        mp = pred_phase == value
        d_tp, d_pt = surface_distances(s_t & mt, s_p & mp, voxel_size_um)
        if d_tp.size:
            boundary = {
                "assd_um": float((d_tp.sum() + d_pt.sum()) / (d_tp.size + d_pt.size)),
                "hd95_um": float(max(np.percentile(d_tp, 95), np.percentile(d_pt, 95))),
                "max_um": float(max(d_tp.max(), d_pt.max())),
            }
        else:
            boundary = {"assd_um": None, "hd95_um": None, "max_um": None}
        out["phases"][name] = {
            "dice": float(dice),
            "iou": float(tp / union) if union else 1.0,
            "fraction_truth": nt / n,
            "fraction_pred": npred / n,
            "boundary": boundary,
            "topology": {"truth": phase_topology(mt), "pred": phase_topology(mp)},
        }
    out["mean_dice"] = float(np.mean(dices)) if dices else 1.0
    if pred_particle is not None and true_particle is not None:
        if pred_particle.shape != true_particle.shape or pred_particle.shape != true_phase.shape:
            raise ValueError("particle volumes must have the phase volumes' shape")
        out["particles"] = instance_scores(true_particle, pred_particle)
    return out
