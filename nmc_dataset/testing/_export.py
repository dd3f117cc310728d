"""Slow twins of nmc_dataset.export."""

from __future__ import annotations

import numpy as np
import trimesh


def int_rows_reference(rows, sep: str = " ") -> str:
    """Slow twin of :func:`int_rows`.

    Parameters
    ----------
    rows : (n, m) int array
        Rows to write.
    sep : str, default " "
        Separator between entries.

    Returns
    -------
    str
        One line per row, each ending in a newline.
    """
    a = np.asarray(rows, dtype=np.int64)
    return "".join(sep.join(map(str, r)) + "\n" for r in a.tolist())


def write_grains_glb_trimesh(path, grain_meshes) -> None:
    """Slow twin: ``(k, trimesh.Trimesh)`` pairs as a trimesh scene exported to GLB.

    Parameters
    ----------
    path : path-like
        GLB file to write.
    grain_meshes : iterable of (int, trimesh.Trimesh)
        Grain label and its surface.
    """

    scene = trimesh.Scene()
    for k, m in grain_meshes:
        scene.add_geometry(m, node_name=f"grain_{k}", geom_name=f"grain_{k}")
    with open(path, "wb") as fh:
        fh.write(scene.export(file_type="glb"))
