"""Shape descriptors of star-shaped shells (docs/method.md#shell-descriptors), vectorised over many shells.

A shell with radius function ``r(u) = Σ a_lm Y_lm(u)`` is triangulated on an icosphere: vertex
``k`` becomes ``r(u_k) u_k`` (negative radii are clipped to 0). From the triangulation (all
tetrahedra share the star point at the origin, so the signed sums are exact for the polyhedron):

``volume``        V(K), sum of the signed tetrahedron volumes.
``area``          A(K), sum of the triangle areas.
``sphericity``    Ψ = π^{1/3} (6V)^{2/3} / A (1 for a ball).
``compactness``   γ = V(K) / V(conv K), the convex hull of the same vertices (qhull); 1 if convex.
``d_max``         the largest distance between two points of K, exactly: the largest distance
                  between two vertices of conv K (qhull's, shared with ``compactness``), see
                  ``_hull_diameter``.
``aspect_ratio``  sqrt(λ_max / λ_min) of the covariance matrix of the *solid* body K (uniform
                  density; computed exactly per tetrahedron): the ratio of the longest to the
                  shortest principal semi-axis of the body's equivalent (Legendre) ellipsoid,
                  >= 1, 1 for a ball or a cube.

All lengths are in the unit of the coefficients (voxels for fitted/sampled models; multiply by
``voxel_size_um`` for µm, areas by its square, volumes by its cube).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy.spatial import ConvexHull

from nmc_dataset.shells._harmonics import icosphere, n_coeffs, sh_basis

__all__ = ["DESCRIPTORS", "DESCRIPTOR_UNITS", "shell_descriptors", "mesh_descriptors"]

#: descriptor names, in report order.
DESCRIPTORS = ("d_max", "compactness", "aspect_ratio", "sphericity", "volume", "area")
#: unit exponent of each descriptor (length**k).
DESCRIPTOR_UNITS = {"d_max": 1, "compactness": 0, "aspect_ratio": 0, "sphericity": 0, "volume": 3, "area": 2}


def _hull_diameter(p: np.ndarray, hull: ConvexHull) -> float:
    """The exact diameter of the points ``p`` (n, 3) from the vertices of their convex hull.

    A lower bound ``d0`` comes from two farthest-point sweeps; a pair farther apart than ``d0``
    has ``|p_i| + |p_j| >= |p_i - p_j| > d0`` (star point at the origin), so both ends have
    ``|p| > d0 - max |p|``: all pairs of those hull vertices give the exact maximum.
    """
    hv = p[hull.vertices]
    r = np.sqrt(np.einsum("ij,ij->i", hv, hv))
    a = hv[np.argmax(r)]
    b = hv[np.argmax(((hv - a) ** 2).sum(1))]
    d0sq = float(((hv - b) ** 2).sum(1).max())
    cand = hv[r > np.sqrt(d0sq) - r.max()]
    sq = np.einsum("ij,ij->i", cand, cand)
    g = cand @ cand.T  # BLAS
    g *= -2.0
    g += sq[:, None]
    g += sq[None, :]
    return float(np.sqrt(max(g.max(initial=0.0), d0sq)))


def _hull_one(p: np.ndarray) -> tuple[float, float]:
    h = ConvexHull(p)
    return h.volume, _hull_diameter(p, h)


def hull_volumes_and_diameters(pts: np.ndarray, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Convex-hull volumes and exact diameters of point sets ``(n, P, 3)``, one qhull call each.

    scipy's qhull is the re-entrant library and releases the GIL, so the calls run on a thread
    pool; each value is the same as a plain loop's (tested).

    Parameters
    ----------
    pts : (n, P, 3) float array
        Point sets (star point at the origin).
    threads : int, optional
        Threads (default: the CPU count, at most 8); 1 is the plain loop.

    Returns
    -------
    volumes, diameters : (n,) float arrays
    """
    pts = np.asarray(pts, dtype=np.float64)
    k = int(threads or min(8, os.cpu_count() or 1))
    if k <= 1 or pts.shape[0] < 16:
        res = [_hull_one(p) for p in pts]
    else:
        with ThreadPoolExecutor(k) as ex:
            res = list(ex.map(_hull_one, pts))
    out = np.array(res, dtype=np.float64).reshape(pts.shape[0], 2)
    return out[:, 0], out[:, 1]


def hull_volumes(pts: np.ndarray, threads: int | None = None) -> np.ndarray:
    """Convex-hull volumes of point sets ``(n, P, 3)`` (see :func:`hull_volumes_and_diameters`).

    Parameters
    ----------
    pts : (n, P, 3) float array
        Point sets.
    threads : int, optional
        Threads of the qhull calls.

    Returns
    -------
    (n,) float array
    """
    return hull_volumes_and_diameters(pts, threads)[0]


def mesh_descriptors(
    points: np.ndarray, faces: np.ndarray, hull: bool = True, threads: int | None = None
) -> dict[str, np.ndarray]:
    """Descriptors of star-shaped triangulated bodies sharing one face list.

    Parameters
    ----------
    points : ndarray, shape (n, P, 3)
        Vertices of ``n`` bodies (star point at the origin).
    faces : ndarray, shape (F, 3)
        Outward-oriented triangles.
    hull : bool
        Compute ``compactness`` and ``d_max`` (one qhull call per body).
    threads : int, optional
        Threads of the convex hulls (:func:`hull_volumes_and_diameters`).

    Returns
    -------
    dict of ndarray (n,)
        One array per descriptor name, one value per body.
    """
    pts = np.asarray(points, dtype=np.float64)
    X, Y, Z = pts[..., 0], pts[..., 1], pts[..., 2]
    ax, ay, az = X[:, faces[:, 0]], Y[:, faces[:, 0]], Z[:, faces[:, 0]]
    bx, by, bz = X[:, faces[:, 1]], Y[:, faces[:, 1]], Z[:, faces[:, 1]]
    cx, cy, cz = X[:, faces[:, 2]], Y[:, faces[:, 2]], Z[:, faces[:, 2]]
    # signed tetrahedron volumes (origin, a, b, c)
    vol_f = (ax * (by * cz - bz * cy) + ay * (bz * cx - bx * cz) + az * (bx * cy - by * cx)) / 6.0
    V = vol_f.sum(axis=1)
    ux, uy, uz = bx - ax, by - ay, bz - az
    wx, wy, wz = cx - ax, cy - ay, cz - az
    nx, ny, nz = uy * wz - uz * wy, uz * wx - ux * wz, ux * wy - uy * wx
    area = 0.5 * np.sqrt(nx * nx + ny * ny + nz * nz).sum(axis=1)
    sx, sy, sz = ax + bx + cx, ay + by + cy, az + bz + cz
    first = np.stack([(vol_f * sx).sum(1), (vol_f * sy).sum(1), (vol_f * sz).sum(1)], axis=1) / 4.0
    # second moments of the tetrahedra: vol/20 (a a^T + b b^T + c c^T + s s^T)
    comps = ((ax, ay, az), (bx, by, bz), (cx, cy, cz), (sx, sy, sz))
    m2 = np.empty((pts.shape[0], 3, 3))
    for i in range(3):
        for j in range(i, 3):
            acc = sum(q[i] * q[j] for q in comps)
            m2[:, i, j] = m2[:, j, i] = (vol_f * acc).sum(axis=1) / 20.0
    with np.errstate(divide="ignore", invalid="ignore"):
        mu = first / V[:, None]
        cov = m2 / V[:, None, None] - mu[:, :, None] * mu[:, None, :]
        lam = np.linalg.eigvalsh(cov)
        ar = np.sqrt(lam[:, -1] / lam[:, 0])
        sph = np.pi ** (1 / 3) * (6 * V) ** (2 / 3) / area
    out = {"volume": V, "area": area, "sphericity": sph, "aspect_ratio": ar}
    if hull:
        comp = np.full(V.shape, np.nan)
        dmax = np.zeros(V.shape)
        idx = np.flatnonzero(V > 0)
        vol, dmax[idx] = hull_volumes_and_diameters(pts[idx], threads)
        comp[idx] = V[idx] / vol
        out["compactness"] = comp
        out["d_max"] = dmax
    return {k: out[k] for k in DESCRIPTORS if k in out}


def shell_descriptors(
    coeffs, subdivisions: int = 4, batch: int = 256, threads: int | None = None
) -> dict[str, np.ndarray]:
    """shell descriptors of shells given by SH coefficients.

    Parameters
    ----------
    coeffs : array_like, shape (n, (L+1)**2) or ((L+1)**2,)
        Radius-function coefficients.
    subdivisions : int
        Icosphere of the triangulation (4: 2562 vertices, 5120 triangles).
    batch : int
        Shells per vectorised batch (memory ~ batch * 5120 * 200 bytes).
    threads : int, optional
        Batches run on a thread pool (default: the CPU count, at most 8; numpy, BLAS and qhull
        release the GIL); the values equal those of ``threads=1`` to rounding (tested).

    Returns
    -------
    dict
        ``d_max``, ``compactness``, ``aspect_ratio``, ``sphericity``, ``volume``, ``area``:
        arrays of shape (n,), lengths in the unit of the coefficients.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.zeros(100); a[0] = 10 * np.sqrt(4 * np.pi)  # a ball of radius 10
    >>> d = shell_descriptors(a[None])
    >>> round(float(d["d_max"][0]), 1), round(float(d["sphericity"][0]), 2)
    (20.0, 1.0)
    """
    c = np.atleast_2d(np.asarray(coeffs, dtype=np.float64))
    K = c.shape[1]
    L = int(round(np.sqrt(K))) - 1
    if n_coeffs(L) != K:
        raise ValueError(f"coefficient count {K} is not (L+1)**2")
    v, f = icosphere(subdivisions)
    BT = sh_basis(L, v).T
    k = int(threads or min(8, os.cpu_count() or 1))
    if k > 1:  # several smaller batches, one per thread at a time
        batch = max(16, min(int(batch), -(-c.shape[0] // (4 * k))))

    def one(a):
        r = np.maximum(c[a : a + batch] @ BT, 0.0)
        return mesh_descriptors(r[:, :, None] * v[None], f, threads=1 if k > 1 else None)

    starts = range(0, c.shape[0], batch)
    if k > 1 and len(starts) > 1:
        with ThreadPoolExecutor(k) as ex:
            parts = list(ex.map(one, starts))
    else:
        parts = [one(a) for a in starts]
    if not parts:
        return {k: np.zeros(0) for k in DESCRIPTORS}
    return {k: np.concatenate([p[k] for p in parts]) for k in DESCRIPTORS}
