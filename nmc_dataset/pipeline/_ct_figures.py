"""Card figure of the ``ct`` release config: CT slices beside the labels they were rendered from.

One row per shown volume (the first of every split), four panels: the reconstructed grey values
(central ``z`` slice, 1–99 % percentile window), the phase labels (pore / NMC / binder), the
particle instances and the grains (random colours, 0 black). Seeing the label next to the grey
value is the point: touching particles, thin binder bridges and noise are what a segmentation
has to get right.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from nmc_dataset.pipeline._card_figures import _pyplot, _save

#: phase colours: pore (dark), NMC (light grey-blue), binder (orange)
PHASE_COLOURS = ("#1b1b1b", "#9db4c0", "#e08a1e")
VOLUMES = ("ct", "phase", "particle", "grain")


def read_ct_row(path: str | os.PathLike, row: int = 0) -> dict:
    """The volumes and scalars of one row of a ``ct`` parquet shard.

    Returns
    -------
    dict
        ``ct``, ``phase``, ``particle``, ``grain`` as ``(n, n, n)`` arrays (``z, y, x``) and the
        other columns as Python values.
    """

    f = pq.ParquetFile(path)
    t = f.read().slice(row, 1)
    out = {}
    for name in t.column_names:
        col = t.column(name).combine_chunks()
        if name in VOLUMES:
            arr = getattr(col, "storage", col)  # an Array3D extension array when datasets' types are registered
            flat = arr.flatten().flatten().flatten().to_numpy()
            n = round(len(flat) ** (1 / 3))
            out[name] = flat.reshape(n, n, n)
        else:
            out[name] = col[0].as_py()
    return out


def _label_colours(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """RGB image of integer labels: a fixed random colour per label, 0 black."""
    ids = np.unique(labels)
    rng = np.random.default_rng(seed)
    lut = {int(i): rng.uniform(0.25, 1.0, 3) for i in ids if i}
    img = np.zeros(labels.shape + (3,))
    for i, c in lut.items():
        img[labels == i] = c
    return img


def ct_label_slices(rows: list[tuple[str, dict]], path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Draw CT slices beside their phase, particle and grain labels (one row per volume).

    Parameters
    ----------
    rows : list of (str, dict)
        ``(row title, read_ct_row(...))`` for every volume shown.
    path : path-like
        Output PNG.
    title : str, optional
        Figure title.

    Returns
    -------
    pathlib.Path
    """
    plt = _pyplot()
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    n = len(rows)
    fig, axes = plt.subplots(n, 4, figsize=(12, 3.1 * n + 0.6), squeeze=False)
    for r, (name, item) in enumerate(rows):
        z = item["ct"].shape[0] // 2
        h = float(item.get("voxel_size_um") or 1.0)
        edge = item["ct"].shape[1] * h
        ext = (0, edge, edge, 0)
        ct = item["ct"][z]
        lo, hi = np.percentile(ct, [1, 99])
        panels = [
            ("CT (reconstructed, 1/µm)", dict(X=ct, cmap="gray", vmin=lo, vmax=hi)),
            (
                "phase",
                dict(
                    X=item["phase"][z], cmap=ListedColormap(PHASE_COLOURS), vmin=-0.5, vmax=2.5, interpolation="nearest"
                ),
            ),
            (
                f"particles ({len(np.unique(item['particle'])) - 1} in the volume)",
                dict(X=_label_colours(item["particle"][z], 1), interpolation="nearest"),
            ),
            (
                f"grains ({len(np.unique(item['grain'])) - 1} in the volume)",
                dict(X=_label_colours(item["grain"][z], 2), interpolation="nearest"),
            ),
        ]
        for c, (label, kw) in enumerate(panels):
            ax = axes[r, c]
            im = ax.imshow(kw.pop("X"), extent=ext, **kw)
            ax.set_title(label if r == 0 else "", fontsize=9)
            ax.set_xlabel("x (µm)", fontsize=8)
            ax.tick_params(labelsize=7)
            if c == 0:
                ax.set_ylabel(f"{name}\ny (µm), slice z = {z}", fontsize=8)
                fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03).ax.tick_params(labelsize=7)
    axes[0, 1].legend(
        handles=[Patch(color=PHASE_COLOURS[k], label=lab) for k, lab in enumerate(("pore", "NMC", "binder"))],
        loc="upper right",
        fontsize=7,
        framealpha=0.8,
    )
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def ct_card_figure(folder: str | os.PathLike, config: str = "ct") -> Path | None:
    """``figures/ct_slices_beside_phase_particle_grain_labels.png``: the first volume of every split of
    ``data/<config>``."""
    folder = Path(folder)
    files = sorted((folder / "data" / config).glob("*.parquet"))
    if not files:
        return None
    order = {"train": 0, "validation": 1, "test": 2}
    first = {}
    for f in files:
        split = f.name.split("-", 1)[0]
        first.setdefault(split, f)
    rows = []
    for split in sorted(first, key=lambda s: (order.get(s, 3), s)):
        item = read_ct_row(first[split])
        label = f"{split} #{item.get('index', 0)}"
        if item.get("solid_fraction") is not None:
            label += f"\nNMC {item['solid_fraction']:.2f}, binder {item.get('binder_fraction', 0):.2f}"
        rows.append((label, item))
    item = rows[0][1]
    shape = "×".join(map(str, item["ct"].shape))
    return ct_label_slices(
        rows,
        folder / "figures" / "ct_slices_beside_phase_particle_grain_labels.png",
        title=f"Virtual CT ({shape} voxels of {item.get('voxel_size_um', 0):.3g} µm) "
        "beside the labels it was rendered from",
    )


__all__ = ["ct_card_figure", "ct_label_slices", "read_ct_row"]
