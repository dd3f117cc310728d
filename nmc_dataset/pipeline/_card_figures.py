"""Figures for the dataset card: descriptor histograms and example slices (matplotlib, Agg).

PNG bytes are made reproducible (fixed DPI, no ``Software``/date metadata), so a rebuilt folder
keeps the same manifest.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Mapping

import numpy as np
import pyarrow.parquet as pq

from nmc_dataset._util import atomic_path, write_json_atomic
from nmc_dataset.export._meshes import grain_surface_mesh
from nmc_dataset.pipeline._card import config_summaries, unit_of

_PNG_META = {"Software": None}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike) -> Path:
    """Lay out, write (atomically, deterministic PNG metadata) and close a figure."""
    import matplotlib.pyplot as plt

    path = Path(path)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110, metadata=_PNG_META)
    finally:
        plt.close(fig)
    return path


def descriptor_histograms(
    values: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    *,
    measured: Mapping[str, np.ndarray] | None = None,
    title: str | None = None,
    units: Mapping[str, str] | None = None,
    bins: int | None = None,
    ncols: int = 3,
) -> Path:
    """A grid of histograms, one per descriptor; measured data overlaid when given.

    Parameters
    ----------
    values : mapping of str to array
        Generated descriptor values per name.
    path : path-like
        PNG to write.
    measured : mapping of str to array, optional
        Measured values of (some of) the same descriptors, drawn as a step outline.
    title : str, optional
        Figure title.
    units : mapping of str to str, optional
        Axis-label unit per descriptor.
    """
    plt = _pyplot()
    names = [n for n in values if np.size(values[n])]
    if not names:
        raise ValueError("no descriptor values to plot")
    ncols = min(ncols, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.6 * nrows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        x = np.asarray(values[name], dtype=float)
        x = x[np.isfinite(x)]
        m = None if measured is None or name not in measured else np.asarray(measured[name], dtype=float)
        lo, hi = (x.min(), x.max()) if m is None else (min(x.min(), np.nanmin(m)), max(x.max(), np.nanmax(m)))
        nb = bins or int(np.clip(1.5 * np.sqrt(x.size), 8, 40))
        edges = np.linspace(lo, hi if hi > lo else lo + 1, nb + 1)
        ax.hist(x, bins=edges, density=True, color="#4C72B0", alpha=0.75, label=f"generated (n={x.size})")
        if m is not None:
            ax.hist(
                m[np.isfinite(m)],
                bins=edges,
                density=True,
                histtype="step",
                color="#C44E52",
                lw=1.8,
                label=f"measured (n={np.isfinite(m).sum()})",
            )
        unit = (units or {}).get(name)
        ax.set_xlabel(f"{name} [{unit}]" if unit and unit != "1" else name)
        ax.set_ylabel("density")
        ax.legend(fontsize=7, frameon=False)
    for ax in list(axes.flat)[len(names) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def example_slices(
    volume: np.ndarray, path: str | os.PathLike, *, title: str | None = None, voxel_size_um: float | None = None
) -> Path:
    """Three central orthogonal slices (xy, xz, yz) of a label volume indexed ``[z, y, x]``.

    Labels are shown with a qualitative colormap (0 = background, white).
    """
    plt = _pyplot()
    from matplotlib.colors import ListedColormap

    vol = np.asarray(volume)
    if vol.ndim != 3:
        raise ValueError(f"expected a 3D volume indexed [z, y, x], got shape {vol.shape}")
    nz, ny, nx = vol.shape
    slices = [
        ("xy (z = %d)" % (nz // 2), vol[nz // 2]),
        ("xz (y = %d)" % (ny // 2), vol[:, ny // 2, :]),
        ("yz (x = %d)" % (nx // 2), vol[:, :, nx // 2]),
    ]
    n_labels = int(vol.max()) + 1
    rng = np.random.default_rng(0)  # fixed colours: deterministic figure
    colours = np.vstack(
        [[1, 1, 1, 1], np.c_[rng.uniform(0.15, 0.95, (max(n_labels - 1, 1), 3)), np.ones(max(n_labels - 1, 1))]]
    )
    cmap = ListedColormap(colours[: max(n_labels, 2)])
    fig, axes = plt.subplots(1, 3, figsize=(9.6, 3.4))
    extent_unit = "µm" if voxel_size_um else "voxels"
    s = voxel_size_um or 1.0
    for ax, (name, img) in zip(axes, slices):
        ax.imshow(
            img,
            cmap=cmap,
            vmin=0,
            vmax=max(n_labels - 1, 1),
            interpolation="nearest",
            origin="lower",
            extent=(0, img.shape[1] * s, 0, img.shape[0] * s),
        )
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(extent_unit)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _constant(values) -> bool:
    """Whether a column holds a single value (a voxel size, a model id): a histogram says nothing."""
    x = np.asarray(values)
    if x.dtype.kind in "fc":
        x = x[np.isfinite(x)]
        return x.size == 0 or float(np.ptp(x)) <= 1e-12 * max(1.0, float(np.abs(x).max()))
    return len({str(v) for v in x.tolist()}) <= 1


def card_figures(
    folder: str | os.PathLike, *, measured: Mapping[str, Mapping[str, np.ndarray]] | None = None, max_items: int = 20000
) -> list[dict]:
    """Make the card's figures for every parquet config of a build folder.

    Writes ``figures/<config>_descriptors.png`` (histograms of the scalar columns, at most
    ``max_items`` rows) and, for configs with a 3D array column, ``figures/<config>_slices.png``
    (slices of the first item); keeps other PNGs already in ``figures/`` (e.g. a rendered particle),
    and writes ``figures/index.json`` (path + caption), which the card reads. Figures this function
    made for configs that no longer exist (a ``--force`` rebuild with other configs) are removed.

    Parameters
    ----------
    folder : str or path-like
        Build folder (``data/<config>/*.parquet``); figures go to ``folder/figures/``.
    measured : mapping, optional
        ``{config: {descriptor: measured values}}`` overlaid on the histograms.
    max_items : int, default 20000
        Rows per config read for the histograms.

    Returns
    -------
    list of dict
        ``[{"path": "figures/...png", "caption": ...}]``.
    """

    folder = Path(folder)
    figdir = folder / "figures"
    made: list[dict] = []
    for c in config_summaries(folder):
        cols = [n for n in c["scalar_columns"] if not n.endswith(("_id", "_seed")) and n not in ("id", "index", "seed")]
        if cols:
            parts, n = [], 0
            for f in c["files"]:
                t = pq.read_table(f, columns=cols)
                parts.append(t)
                n += t.num_rows
                if n >= max_items:
                    break
            values = {
                k: np.concatenate([p.column(k).to_numpy(zero_copy_only=False) for p in parts])[:max_items] for k in cols
            }
            constant = sorted(k for k, v in values.items() if _constant(v))
            values = {k: v for k, v in values.items() if k not in constant}
            if not values:
                continue
            rel = f"figures/{c['name']}_descriptors.png"
            descriptor_histograms(
                values,
                folder / rel,
                measured=(measured or {}).get(c["name"]),
                title=f"{c['name']}: descriptor distributions",
                units={k: unit_of(k) for k in cols},
            )
            fixed = f" Constant in this release, not drawn: {', '.join(constant)}." if constant else ""
            made.append(
                {
                    "path": rel,
                    "caption": f"Distributions of the {c['name']} descriptors ({min(n, max_items)} items).{fixed}",
                }
            )
        for col in c["array_columns"]:
            first = pq.ParquetFile(c["files"][0]).read_row_group(0, columns=[col]).column(col)[0].as_py()
            arr = np.asarray(first) if first is not None else None
            if arr is not None and arr.ndim == 3 and arr.dtype.kind in "iub":  # label volumes (not grey values)
                rel = f"figures/{c['name']}_{col}_slices.png"
                example_slices(arr, folder / rel, title=f"{c['name']}: item 0, central slices of '{col}'")
                made.append(
                    {"path": rel, "caption": f"Central slices through the first item's '{col}' volume ({c['name']})."}
                )
                break
    known = {m["path"] for m in made}
    _remove_stale_generated(folder, known)
    if figdir.is_dir():
        for p in sorted(figdir.glob("*.png")):
            rel = f"figures/{p.name}"
            if rel not in known:
                made.append({"path": rel, "caption": p.stem.replace("_", " ")})
    if made:
        write_json_atomic(figdir / "index.json", [{**m, "generated": m["path"] in known} for m in made])
        os.chmod(figdir / "index.json", 0o644)
    return made


def _remove_stale_generated(folder: Path, keep: set) -> None:
    """Delete PNGs that an earlier :func:`card_figures` call generated (``"generated": true`` in the
    old ``figures/index.json``) and this call did not make again."""

    index = folder / "figures" / "index.json"
    try:
        old = json.loads(index.read_text())
    except (OSError, ValueError):
        return
    for entry in old if isinstance(old, list) else []:
        rel = entry.get("path") if isinstance(entry, dict) else None
        if rel and entry.get("generated") and rel not in keep and rel.startswith("figures/") and "/" not in rel[8:]:
            (folder / rel).unlink(missing_ok=True)


def particle_rendering(
    labels: np.ndarray,
    path: str | os.PathLike,
    *,
    voxel_size_um: float = 1.0,
    title: str | None = None,
    smoothing_iterations: int = 8,
) -> Path:
    """A shaded 3D view of a particle cut open: the half with ``y`` above the centre is removed, so
    the grains show on the cut plane and on the outer surface.

    The surface is the conforming grain mesh of the label volume (VTK SurfaceNets3D, as in
    :func:`nmc_dataset.export._meshes.grain_surface_mesh`); triangles are coloured by grain with
    fixed colours and Lambert-shaded. Deterministic bytes for the same volume.

    Parameters
    ----------
    labels : (nz, ny, nx) int array
        0 = outside, k = grain k.
    path : path-like
        PNG to write.
    voxel_size_um : float
        Axis scale.
    """
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    plt = _pyplot()
    lab = np.array(labels, dtype=np.int32, copy=True)
    if lab.ndim != 3:
        raise ValueError(f"expected a 3D volume indexed [z, y, x], got shape {lab.shape}")
    lab[:, lab.shape[1] // 2 + 1 :, :] = 0  # cut open
    n = int(lab.max())
    fig = plt.figure(figsize=(4.6, 4.4))
    ax = fig.add_subplot(projection="3d")
    if n > 0:
        surf = grain_surface_mesh(lab, np.zeros(3), voxel_size_um, n, smoothing_iterations)
        outer = (surf.pairs == 0).any(axis=1)
        faces, pairs = surf.faces[outer], surf.pairs[outer]
        grain = pairs.max(axis=1)
        tri = surf.vertices[faces]
        normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
        normal[pairs[:, 0] == 0] *= -1  # pairs[:, 0] is the side the normal points out of
        light = np.array([0.5, 0.8, 0.6])  # from the viewer's side (the cut plane faces +y)
        light /= np.linalg.norm(light)
        shade = 0.35 + 0.65 * np.clip(normal @ light, 0, 1)
        rng = np.random.default_rng(0)  # fixed colours: deterministic figure
        palette = rng.uniform(0.2, 0.95, (n + 1, 3))
        colours = np.clip(palette[grain] * shade[:, None], 0, 1)
        ax.add_collection3d(
            Poly3DCollection(tri, facecolors=colours, edgecolors="none", linewidths=0, antialiased=False)
        )
        lo, hi = surf.vertices.min(axis=0), surf.vertices.max(axis=0)
        c, r = (lo + hi) / 2, (hi - lo).max() / 2
        ax.set_xlim(c[0] - r, c[0] + r)
        ax.set_ylim(c[1] - r, c[1] + r)
        ax.set_zlim(c[2] - r, c[2] + r)
    ax.view_init(elev=22, azim=62)
    ax.set_axis_off()
    ax.set_box_aspect((1, 1, 1), zoom=1.35)
    if title:
        ax.set_title(title, fontsize=9)
    return _save(fig, path)
