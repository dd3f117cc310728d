"""Segmentation of a CT volume into separate particles (docs/method.md#ct-segmentation).

Grey-value input runs every step; already segmented input (binary, or a phase-label volume
with ``phase=K``) skips smoothing and thresholding, and the result says so.

1. Gaussian smoothing, σ = 1.8 voxels, computed in float32 (never a float64 copy of the volume).
2. Otsu threshold; particles are the *bright* phase (NMC is denser than pores/binder).
3. Watershed per connected component on its distance transform, markers are the h-maxima
   (``h`` voxels) of the distance smoothed with σ = 1 voxel; distance transforms are computed per component crop, so
   no volume-sized float64 array is ever allocated.
4. Disconnected pieces of one label become separate components.
5. Components with fewer than ``min_volume`` voxels or sphericity Ψ < ``min_sphericity``
   (Ψ = π^{1/3} (6V)^{2/3} / A, V the voxel count, A the marching-cubes surface area) are merged
   into the neighbour sharing the most voxel faces with them; with no neighbour they are dropped.
6. Components touching the volume border are removed.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.measure import marching_cubes, mesh_surface_area
from skimage.morphology import h_maxima
from skimage.segmentation import relabel_sequential, watershed

from nmc_dataset.errors import InputError

__all__ = ["Segmentation", "segment_volume", "classify_volume", "voxel_sphericity"]


@dataclasses.dataclass
class Segmentation:
    """Result of :func:`segment_volume`.

    Parameters
    ----------
    labels : ndarray of int32, shape (Z, Y, X)
        Particle labels 1..n, 0 = background.
    n_particles : int
        Number of particles (the largest label).
    input_kind : str
        ``"grey"``, ``"binary"``, ``"phase"`` or ``"labels"`` (instance labels used as given).
    threshold : float or None
        Otsu threshold on the smoothed volume (grey input only).
    skipped : list of str
        Steps not run (segmented input).
    counts : dict
        ``components`` (after 3-4), ``split``, ``merged``, ``dropped``, ``border_removed``.
    """

    labels: np.ndarray
    n_particles: int
    input_kind: str
    threshold: float | None
    skipped: list
    counts: dict

    def summary(self) -> str:
        """One paragraph for logs."""
        c = self.counts
        s = (
            f"{self.input_kind} input: {c.get('components', 0)} components after watershed "
            f"({c.get('split', 0)} split off), {c.get('merged', 0)} small/non-spherical merged, "
            f"{c.get('dropped', 0)} dropped, {c.get('border_removed', 0)} touching the border removed"
            + (
                f", {c['outside_fov_removed']} touching the NaN voxels outside the field of view removed"
                if c.get("outside_fov_removed")
                else ""
            )
            + f" -> {self.n_particles} particles"
        )
        if self.threshold is not None:
            s += f"; Otsu threshold {self.threshold:.6g}"
        if self.skipped:
            s += "; skipped for segmented input: " + ", ".join(self.skipped)
        return s


def classify_volume(volume: np.ndarray, phase: int | None = None) -> str:
    """What a volume holds.

    ``"phase"`` if ``phase`` is given; ``"binary"`` for bool or two-valued volumes; ``"labels"``
    for an instance-label volume (integers, piecewise constant, one connected region per value,
    as other segmentation tools write); ``"phase-like"`` for a piecewise-constant integer volume
    whose values are phases (many regions per value: it needs ``phase``); else ``"grey"``.
    """
    if phase is not None:
        return "phase"
    if volume.dtype == bool:
        return "binary"
    lo, hi = volume.min(), volume.max()
    if lo == hi:
        return "binary"
    if np.issubdtype(volume.dtype, np.integer):
        kind = _label_kind(volume)
        if kind is not None:
            return kind
    # two-valued (0/1, 0/255, ...) volumes are segmented already; slices first for an early exit
    step = max(1, volume.shape[0] // 64)
    for z in range(0, volume.shape[0], step):
        sl = volume[z]
        if np.any((sl != lo) & (sl != hi)):
            return "grey"
    for z in range(volume.shape[0]):
        sl = volume[z]
        if np.any((sl != lo) & (sl != hi)):
            return "grey"
    return "binary"


def _label_kind(volume: np.ndarray) -> str | None:
    """``"labels"`` / ``"phase-like"`` for piecewise-constant integer volumes with > 2 values, else None."""
    step = max(1, volume.shape[0] // 16)
    sample = np.asarray(volume[::step])
    values = np.unique(sample)
    if values.size <= 2:
        return None
    same = float(np.mean(sample[:, :, 1:] == sample[:, :, :-1]))
    if same < 0.9:  # grey values: neighbours differ (noise)
        return None
    regions = []
    for v in values[values != 0][:: max(1, (values.size - 1) // 12)][:12]:
        _, n = ndimage.label(np.asarray(volume) == v)
        regions.append(n)
    return "labels" if regions and np.median(regions) <= 1.5 else "phase-like"


def _outside_fov_removed(labels: np.ndarray, outside: np.ndarray) -> int:
    """Drop particles that touch voxels outside the field of view (they are cut, like border ones)."""
    touching = np.unique(labels[ndimage.binary_dilation(outside)])
    touching = touching[touching != 0]
    if touching.size:
        labels[np.isin(labels, touching)] = 0
    return int(touching.size)


def voxel_sphericity(mask: np.ndarray) -> float:
    """Sphericity Ψ = π^{1/3} (6V)^{2/3} / A of a voxel set (V voxel count, A marching-cubes area)."""

    m = np.pad(np.asarray(mask, dtype=np.float32), 1)
    V = float(mask.sum())
    if V == 0:
        return 0.0
    verts, faces, _, _ = marching_cubes(m, 0.5)
    A = mesh_surface_area(verts, faces)
    return float(np.pi ** (1 / 3) * (6 * V) ** (2 / 3) / A) if A > 0 else 0.0


def _pad_slice(sl, shape, pad=1):
    return tuple(slice(max(s.start - pad, 0), min(s.stop + pad, n)) for s, n in zip(sl, shape))


def _watershed_components(mask: np.ndarray, h: float) -> tuple[np.ndarray, int]:
    """Distance-transform watershed per connected component; returns labels and the split count."""

    cc, n = ndimage.label(mask)
    cc = cc.astype(np.int32, copy=False)
    objs = ndimage.find_objects(cc)
    next_label = n + 1
    extra = 0
    for lab, sl in enumerate(objs, start=1):
        if sl is None:
            continue
        sl = _pad_slice(sl, cc.shape)
        comp = cc[sl] == lab
        if comp.sum() < 30:
            continue
        dist = ndimage.distance_transform_edt(comp)
        # a light smoothing of the distance removes ties/plateau artefacts of the voxel grid
        peaks = h_maxima(ndimage.gaussian_filter(dist, 1.0), h) > 0
        markers, nm = ndimage.label(peaks & comp)
        if nm <= 1:
            continue
        ws = watershed(-dist, markers, mask=comp)
        view = cc[sl]
        for k in range(2, nm + 1):
            view[ws == k] = next_label
            next_label += 1
            extra += 1
    return cc, extra


def _split_disconnected(labels: np.ndarray) -> int:
    objs = ndimage.find_objects(labels)
    next_label = int(labels.max()) + 1
    split = 0
    for lab, sl in enumerate(objs, start=1):
        if sl is None:
            continue
        view = labels[sl]
        comp = view == lab
        pieces, n = ndimage.label(comp)
        if n <= 1:
            continue
        sizes = np.bincount(pieces.ravel())[1:]
        keep = int(np.argmax(sizes)) + 1
        for k in range(1, n + 1):
            if k != keep:
                view[pieces == k] = next_label
                next_label += 1
                split += 1
    return split


def _merge_small(labels: np.ndarray, min_volume: int, min_sphericity: float) -> tuple[int, int]:
    objs = ndimage.find_objects(labels)
    sizes = np.bincount(labels.ravel())
    bad = []
    for lab, sl in enumerate(objs, start=1):
        if sl is None:
            continue
        v = int(sizes[lab])
        if v < min_volume:
            bad.append((v, lab))
            continue
        if min_sphericity > 0 and voxel_sphericity(labels[sl] == lab) < min_sphericity:
            bad.append((v, lab))
    merged = dropped = 0
    struct = ndimage.generate_binary_structure(3, 1)
    for _, lab in sorted(bad):
        sl = objs[lab - 1]
        psl = _pad_slice(sl, labels.shape)
        view = labels[psl]
        comp = view == lab
        if not comp.any():
            continue
        ring = ndimage.binary_dilation(comp, struct) & ~comp
        neigh = view[ring]
        neigh = neigh[neigh != 0]
        if neigh.size:
            target = int(np.bincount(neigh).argmax())
            view[comp] = target
            merged += 1
        else:
            view[comp] = 0
            dropped += 1
    return merged, dropped


def _remove_border(labels: np.ndarray) -> int:
    faces = [labels[0], labels[-1], labels[:, 0], labels[:, -1], labels[:, :, 0], labels[:, :, -1]]
    touching = np.unique(np.concatenate([f.ravel() for f in faces]))
    touching = touching[touching != 0]
    if touching.size:
        labels[np.isin(labels, touching)] = 0
    return int(touching.size)


def segment_volume(
    volume: np.ndarray,
    *,
    phase: int | None = None,
    sigma: float = 1.8,
    min_volume: int = 10,
    min_sphericity: float = 0.5,
    h: float = 2.0,
    where=None,
) -> Segmentation:
    """Segment a 3D CT volume into particles (docs/method.md#ct-segmentation).

    Parameters
    ----------
    volume : ndarray, shape (Z, Y, X)
        Grey values, a binary volume, or a phase-label volume (with ``phase``).
    phase : int, optional
        Label value of the particle phase in a phase-label volume.
    sigma : float
        Gaussian σ in voxels (grey input).
    min_volume, min_sphericity : float
        Step 5 thresholds (voxels; Ψ).
    h : float
        Minimum depth (voxels) of a distance-transform maximum to seed its own particle.
    where : str, optional
        File name used in error messages.

    Returns
    -------
    Segmentation
        Particle labels and what the segmentation did.

    Raises
    ------
    InputError
        If ``phase`` is absent from the volume or no particle remains.
    """

    if volume.ndim != 3:
        raise InputError(f"expected a 3D volume, got shape {volume.shape}", where)
    outside = None
    if np.issubdtype(volume.dtype, np.floating):
        finite = np.isfinite(volume)
        if not finite.all():  # NaN (or inf): outside the reconstructed field of view
            if not finite.any():
                raise InputError("every voxel is NaN: nothing inside the field of view", where)
            outside = ~finite
            volume = np.where(finite, volume, np.float32(np.min(volume[finite])))
    kind = classify_volume(volume, phase)
    skipped: list[str] = []
    threshold = None
    if kind == "phase-like":
        values = np.unique(volume[:: max(1, volume.shape[0] // 16)])
        raise InputError(
            f"this looks like a phase-label volume (values {', '.join(str(v) for v in values[:8])}, "
            "many regions per value): give the particle phase with --phase K",
            where,
        )
    if kind == "grey":
        if outside is None:
            smooth = ndimage.gaussian_filter(volume, sigma, output=np.float32, mode="nearest")
            sample = smooth if smooth.size <= 2**26 else smooth[::2, ::2, ::2]
        else:  # normalised convolution: voxels outside the field of view carry no weight
            w = ndimage.gaussian_filter((~outside).astype(np.float32), sigma, mode="nearest")
            smooth = ndimage.gaussian_filter(
                np.where(outside, 0, volume).astype(np.float32), sigma, mode="nearest"
            ) / np.maximum(w, 1e-6)
            sample = smooth[~outside]
            sample = sample if sample.size <= 2**26 else sample[::8]
        threshold = float(threshold_otsu(sample))
        mask = smooth > threshold
        del smooth
    elif kind == "labels":
        # instance labels from another tool: each value is a particle, used as given
        labels = np.asarray(volume).astype(np.int64)
        labels, _, _ = relabel_sequential(labels)
        labels = labels.astype(np.int32, copy=False)
        skipped = ["gaussian smoothing", "Otsu threshold", "watershed (instance labels used as given)"]
        mask = None
    elif kind == "binary":
        mask = volume == volume.max() if volume.dtype != bool else np.asarray(volume)
        if volume.dtype != bool and volume.min() == volume.max():
            mask = np.zeros(volume.shape, dtype=bool)
        skipped = ["gaussian smoothing", "Otsu threshold"]
    else:
        mask = volume == phase
        if not mask.any():
            present = np.unique(volume[:: max(1, volume.shape[0] // 32)])[:20]
            raise InputError(
                f"phase {phase} does not occur in the volume (values include {', '.join(str(v) for v in present)})",
                where,
            )
        skipped = ["gaussian smoothing", "Otsu threshold"]
    if mask is not None and outside is not None:
        mask &= ~outside
    if mask is not None and not mask.any():
        raise InputError("segmentation is empty: no particle voxels (check the volume or --phase)", where)
    if mask is not None:
        labels, n_split_ws = _watershed_components(mask, h)
        del mask
    else:
        n_split_ws = 0
    n_split = _split_disconnected(labels)
    n_comp = int(len([o for o in ndimage.find_objects(labels) if o is not None]))
    merged, dropped = _merge_small(labels, min_volume, min_sphericity)
    border = _remove_border(labels)
    fov_removed = _outside_fov_removed(labels, outside) if outside is not None else 0
    labels, _, _ = relabel_sequential(labels)
    labels = labels.astype(np.int32, copy=False)
    n = int(labels.max())
    if n == 0:
        raise InputError("segmentation is empty: every component was dropped or touched the border", where)
    return Segmentation(
        labels=labels,
        n_particles=n,
        input_kind=kind,
        threshold=threshold,
        skipped=skipped,
        counts={
            "components": n_comp,
            "watershed_split": n_split_ws,
            "split": n_split,
            "merged": merged,
            "dropped": dropped,
            "border_removed": border,
            "outside_fov_removed": fov_removed,
        },
    )
