"""Small previews of particles coloured by crystal orientation: a GLB for viewers, a PNG rendering.

Colour key (IPF-like, in each grain's radial frame). NMC811 is a layered oxide with one unique
axis, the crystal c-axis (the 3-fold axis of -3m, normal to the Li layers), a line without sign.
For grain ``k`` with centroid ``x_k`` and c-axis ``c_k`` (both in the particle frame) the local
frame is the radial direction ``r = x_k / |x_k|``, the meridian direction ``e_θ`` (towards
``-z`` along the sphere through ``x_k``; ``e_θ = x`` on the z-axis) and ``e_φ = r × e_θ``. The
colour is

    RGB = (|c·r|, |c·e_θ|, |c·e_φ|) / max(|c·r|, |c·e_θ|, |c·e_φ|),

so red = c-axis radial (Li layers tangential, closed to the electrolyte), green/blue = c-axis
tangential (Li layers radial: the open channels the radially textured NMC811 particles of the
literature have), mixtures in between, as in an inverse pole figure the corners are pure colours.
Grains without an orientation get neutral grey.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import trimesh
from trimesh.exchange.gltf import export_glb

from nmc_dataset._util import atomic_path
from nmc_dataset.export._cleanup import clean_labels
from nmc_dataset.export._decimate import coarsen_surface
from nmc_dataset.export._meshes import GrainSurface, grain_surface_mesh

#: colour of grains without an orientation
NO_ORIENTATION_RGB = (150, 150, 150)
#: the colour key, for legends and dataset cards
COLOUR_KEY = (
    "red: crystal c-axis radial; green: c-axis tangential along the meridian; blue: c-axis "
    "tangential along the parallel (IPF-like, in each grain's radial frame)"
)


def radial_frames(centroids: np.ndarray) -> np.ndarray:
    """Per grain the rows ``(r, e_θ, e_φ)`` of its radial frame (``(n, 3, 3)``), see the module notes."""
    x = np.asarray(centroids, dtype=np.float64).reshape(-1, 3)
    nrm = np.linalg.norm(x, axis=1, keepdims=True)
    r = np.where(nrm > 1e-12, x / np.maximum(nrm, 1e-300), np.array([0.0, 0.0, 1.0]))
    z = np.array([0.0, 0.0, 1.0])
    # e_θ: -z projected onto the tangent plane (on the z-axis: the x-axis)
    t = -z[None, :] - (r @ -z)[:, None] * r
    tn = np.linalg.norm(t, axis=1, keepdims=True)
    t = np.where(tn > 1e-9, t / np.maximum(tn, 1e-300), np.array([1.0, 0.0, 0.0]))
    p = np.cross(r, t)
    return np.stack([r, t, p], axis=1)


def c_axis_colours(c_axis: np.ndarray | None, centroids: np.ndarray) -> np.ndarray:
    """RGB (uint8, ``(n, 3)``) of grains from their c-axes and centroids (particle frame).

    Parameters
    ----------
    c_axis : (n, 3) array or None
        Unit c-axes; rows with a non-finite entry (and ``None`` for all) get
        :data:`NO_ORIENTATION_RGB`.
    centroids : (n, 3) array
        Grain centroids (µm, particle centre at the origin).
    """
    cen = np.asarray(centroids, dtype=np.float64).reshape(-1, 3)
    out = np.tile(np.asarray(NO_ORIENTATION_RGB, dtype=np.uint8), (len(cen), 1))
    if c_axis is None:
        return out
    c = np.asarray(c_axis, dtype=np.float64).reshape(-1, 3)
    ok = np.isfinite(c).all(axis=1) & np.isfinite(cen).all(axis=1)
    frames = radial_frames(np.where(ok[:, None], cen, 0.0))
    comp = np.abs(np.einsum("nij,nj->ni", frames, np.where(ok[:, None], c, 0.0)))
    m = comp.max(axis=1, keepdims=True)
    ok &= m[:, 0] > 1e-12
    rgb = np.rint(255.0 * comp / np.maximum(m, 1e-300))
    out[ok] = rgb[ok].astype(np.uint8)
    return out


def coarse_grain_surface(
    labels: np.ndarray,
    origin_um,
    voxel_size_um: float,
    n_grains: int | None = None,
    coarsen_voxels: float = 2.0,
    smoothing_iterations: int = 8,
) -> GrainSurface:
    """The conforming grain surface of a (small) label volume, cleaned and coarsened.

    Parameters
    ----------
    labels : (nz, ny, nx) int array
        0 = outside, ``k`` = grain ``k``.
    origin_um : (3,) array
        Centre ``(x, y, z)`` of voxel ``[0, 0, 0]``.
    voxel_size_um : float
    n_grains : int, optional
        Default: the largest label.
    coarsen_voxels : float
        Target edge length in voxels (0: no coarsening).
    """
    lab, _ = clean_labels(np.asarray(labels))
    n = int(lab.max()) if n_grains is None else int(n_grains)
    surf = grain_surface_mesh(
        lab, np.asarray(origin_um, dtype=np.float64), float(voxel_size_um), n, smoothing_iterations
    )
    if coarsen_voxels and len(surf.faces):
        surf = coarsen_surface(surf, float(coarsen_voxels) * float(voxel_size_um))
    return surf


def _outer_patches(surface: GrainSurface):
    """Outer triangles (facing outwards) with their grain, vertices duplicated per grain so that
    each grain's patch carries its own colour. Returns ``(vertices, faces, grain of each vertex)``."""
    outer = (surface.pairs == 0).any(axis=1)
    f = surface.faces[outer].copy()
    pr = surface.pairs[outer]
    flip = pr[:, 0] == 0  # the normal points out of pairs[:, 0] = the outside: turn it
    f[flip] = f[flip][:, ::-1]
    g = pr.max(axis=1).astype(np.int64)
    key = f.astype(np.int64) * (int(surface.n_grains) + 1) + g[:, None]
    uk, inv = np.unique(key, return_inverse=True)
    return surface.vertices[uk // (int(surface.n_grains) + 1)], inv.reshape(-1, 3), uk % (int(surface.n_grains) + 1)


def preview_glb(surface: GrainSurface, colours_rgb: np.ndarray, extras: dict | None = None) -> bytes:
    """GLB bytes of a grain surface's outer triangles, each grain's patch in its colour.

    Parameters
    ----------
    surface : GrainSurface
    colours_rgb : (n_grains, 3) uint8 array
        Row ``k - 1`` = grain ``k``.
    extras : dict, optional
        JSON-serialisable metadata stored in the glTF ``extras`` (e.g. particle id, colour key).
    """

    verts, faces, vg = _outer_patches(surface)
    col = np.asarray(colours_rgb, dtype=np.uint8).reshape(-1, 3)
    rgba = np.full((len(verts), 4), 255, dtype=np.uint8)
    if len(verts):
        rgba[:, :3] = col[vg - 1]
    mesh = trimesh.Trimesh(verts.astype(np.float32), faces, vertex_colors=rgba, process=False)
    mesh.units = "um"
    scene = trimesh.Scene()
    scene.add_geometry(mesh, node_name="particle", geom_name="particle")
    scene.metadata.update(extras or {})  # glTF scenes[0].extras
    return export_glb(scene)


def orientation_rendering(
    labels: np.ndarray,
    colours_rgb: np.ndarray,
    path: str | os.PathLike,
    *,
    voxel_size_um: float = 1.0,
    title: str | None = None,
    smoothing_iterations: int = 8,
):
    """A shaded 3D view of a particle cut open (``y`` above the centre removed), every grain in
    its orientation colour (:func:`c_axis_colours`), with the colour key. Deterministic bytes.

    Parameters
    ----------
    labels : (nz, ny, nx) int array
        0 = outside, ``k`` = grain ``k``.
    colours_rgb : (n_grains, 3) uint8 array
        Row ``k - 1`` = grain ``k``.
    path : path-like
        PNG to write (atomically).
    voxel_size_um : float, default 1.0
        Voxel edge (µm): scale of the plotted surface.
    title : str, optional
        Title above the view (none when empty or ``None``).
    smoothing_iterations : int, default 8
        Constrained smoothing passes of the grain surfaces (:func:`grain_surface_mesh`; 0 = voxel
        staircase).

    Returns
    -------
    pathlib.Path
        The PNG written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    lab = np.array(labels, dtype=np.int32, copy=True)
    if lab.ndim != 3:
        raise ValueError(f"expected a 3D volume indexed [z, y, x], got shape {lab.shape}")
    lab[:, lab.shape[1] // 2 + 1 :, :] = 0  # cut open
    col = np.asarray(colours_rgb, dtype=np.float64).reshape(-1, 3) / 255.0
    fig = plt.figure(figsize=(5.2, 4.8))
    ax = fig.add_subplot(projection="3d")
    if lab.max() > 0:
        surf = grain_surface_mesh(lab, np.zeros(3), voxel_size_um, len(col), smoothing_iterations)
        verts, faces, vg = _outer_patches(surf)
        tri = verts[faces]
        normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
        light = np.array([0.5, 0.8, 0.6])  # from the viewer's side (the cut plane faces +y)
        light /= np.linalg.norm(light)
        shade = 0.35 + 0.65 * np.clip(normal @ light, 0, 1)
        colours = np.clip(col[vg[faces[:, 0]] - 1] * shade[:, None], 0, 1)
        ax.add_collection3d(
            Poly3DCollection(tri, facecolors=colours, edgecolors="none", linewidths=0, antialiased=False)
        )
        lo, hi = verts.min(axis=0), verts.max(axis=0)
        c, r = (lo + hi) / 2, (hi - lo).max() / 2
        ax.set_xlim(c[0] - r, c[0] + r)
        ax.set_ylim(c[1] - r, c[1] + r)
        ax.set_zlim(c[2] - r, c[2] + r)
    ax.view_init(elev=22, azim=62)
    ax.set_axis_off()
    ax.set_box_aspect((1, 1, 1), zoom=1.45)
    if title:
        ax.set_title(title, fontsize=9)
    fig.legend(
        handles=[
            Patch(color=(1, 0, 0), label="c-axis radial"),
            Patch(color=(0, 1, 0), label="c-axis tangential (meridian)"),
            Patch(color=(0, 0, 1), label="c-axis tangential (parallel)"),
            Patch(color=np.asarray(NO_ORIENTATION_RGB) / 255, label="no orientation"),
        ],
        loc="lower center",
        ncol=2,
        fontsize=7,
        frameon=False,
    )
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130, metadata={"Software": None})
    plt.close(fig)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())
    return path


__all__ = [
    "COLOUR_KEY",
    "NO_ORIENTATION_RGB",
    "c_axis_colours",
    "coarse_grain_surface",
    "orientation_rendering",
    "preview_glb",
    "radial_frames",
]
