"""Card figure of the ``sequences`` release config: one sequence over time.

One column per state of the first sequence of the first split, three rows: the CT (central ``z``
slice, one grey window for all states, so a brightness change is real), the phase labels with the
crack voxels in red, and the magnitude of the exact displacement from the reference state
``|u|`` (CT voxels, one colour scale for all states; crack voxels, where ``u`` is undefined, white).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from nmc_dataset.pipeline._card_figures import _pyplot, _save
from nmc_dataset.pipeline._ct_figures import PHASE_COLOURS

ARRAYS = {"ct": 3, "ct_reference": 3, "phase": 3, "particle": 3, "grain": 3, "crack": 3, "displacement": 4}
FIGURE = "figures/sequence_slices_over_time_and_displacement.png"


def read_sequence_rows(path: str | os.PathLike, sequence: int | None = None) -> list[dict]:
    """The rows of one sequence in a ``sequences`` parquet shard, in step order.

    Parameters
    ----------
    path : path-like
        A shard of ``data/sequences``.
    sequence : int, optional
        The sequence (default: the first in the shard).

    Returns
    -------
    list of dict
        Arrays as numpy (``(n, n, n)``; ``displacement`` ``(n, n, n, 3)``), other columns as Python values.
    """
    t = pq.read_table(path)
    seqs = t.column("sequence").to_pylist()
    want = seqs[0] if sequence is None else sequence
    rows = []
    for i, s in enumerate(seqs):
        if s != want:
            continue
        row = {}
        for name in t.column_names:
            col = t.column(name).slice(i, 1).combine_chunks()
            if name in ARRAYS:
                arr = getattr(col, "storage", col)
                for _ in range(ARRAYS[name]):
                    arr = arr.flatten()
                flat = arr.to_numpy(zero_copy_only=False)
                n = round((len(flat) / (3 if ARRAYS[name] == 4 else 1)) ** (1 / 3))
                row[name] = flat.reshape((n, n, n, 3) if ARRAYS[name] == 4 else (n, n, n))
            else:
                row[name] = col[0].as_py()
        rows.append(row)
    return sorted(rows, key=lambda r: r["step"])


def sequence_slices(rows: list[dict], path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Draw CT, labels with cracks and ``|u|`` of every state of one sequence (one column per state).

    Parameters
    ----------
    rows : list of dict
        :func:`read_sequence_rows` of one sequence.
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

    n = len(rows)
    fig, axes = plt.subplots(3, n, figsize=(2.6 * n + 1.2, 8.2), squeeze=False)
    z = rows[0]["ct"].shape[0] // 2
    h = float(rows[0].get("voxel_size_um") or 1.0)
    edge = rows[0]["ct"].shape[1] * h
    ext = (0, edge, edge, 0)
    lo, hi = np.percentile(np.stack([r["ct"][z] for r in rows]), [1, 99])
    mags = [np.linalg.norm(r["displacement"][z], axis=-1) for r in rows]
    umax = max([float(np.nanmax(m)) for m in mags if np.isfinite(m).any()] + [1e-3])
    lab_cmap = ListedColormap(list(PHASE_COLOURS) + ["#d62728"])
    ucmap = plt.get_cmap("viridis").with_extremes(bad="white")
    for c, (r, mag) in enumerate(zip(rows, mags)):
        lab = r["phase"][z].astype(np.int16)
        lab[r["crack"][z] > 0] = 3
        im0 = axes[0, c].imshow(r["ct"][z], cmap="gray", vmin=lo, vmax=hi, extent=ext)
        axes[1, c].imshow(lab, cmap=lab_cmap, vmin=-0.5, vmax=3.5, interpolation="nearest", extent=ext)
        im2 = axes[2, c].imshow(np.ma.masked_invalid(mag), cmap=ucmap, vmin=0, vmax=umax, extent=ext)
        axes[0, c].set_title(
            f"step {r['step']}: cycle {r['cycle']:.2f}\nLi(1-x), x = {r['soc']:.2f}; {r['n_cracks']} crack(s)",
            fontsize=8,
        )
        for k in range(3):
            axes[k, c].tick_params(labelsize=6)
            axes[k, c].set_xlabel("x (µm)", fontsize=7)
    axes[0, 0].set_ylabel(f"CT (1/µm), z = {z}\ny (µm)", fontsize=8)
    axes[1, 0].set_ylabel("phase: pore, NMC, binder,\ncrack (red)\ny (µm)", fontsize=8)
    axes[2, 0].set_ylabel("|u| from step 0 (CT voxels)\ny (µm)", fontsize=8)
    fig.colorbar(im0, ax=axes[0, -1], fraction=0.046, pad=0.03).ax.tick_params(labelsize=7)
    fig.colorbar(im2, ax=axes[2, -1], fraction=0.046, pad=0.03).ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def sequence_card_figure(folder: str | os.PathLike, config: str = "sequences") -> Path | None:
    """:data:`FIGURE`: the first sequence of the first split of ``data/<config>`` over time.

    Parameters
    ----------
    folder : path-like
        The build folder.
    config : str, default "sequences"
        The config folder under ``data/``.

    Returns
    -------
    pathlib.Path or None
        The PNG, or None when the config has no shards.
    """
    folder = Path(folder)
    files = sorted((folder / "data" / config).glob("*.parquet"))
    if not files:
        return None
    order = {"train": 0, "validation": 1, "test": 2}
    first = min(files, key=lambda f: (order.get(f.name.split("-", 1)[0], 3), f.name))
    rows = read_sequence_rows(first)
    n = rows[0]["ct"].shape[0]
    return sequence_slices(
        rows,
        folder / FIGURE,
        title=f"{first.name.split('-', 1)[0]} sequence {rows[0]['sequence']}: {n}³ CT voxels of "
        f"{rows[0]['voxel_size_um']:.3g} µm over {len(rows)} states, with the exact "
        "displacement from the reference state",
    )


__all__ = ["read_sequence_rows", "sequence_card_figure", "sequence_slices"]
