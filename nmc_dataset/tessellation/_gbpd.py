"""Generalized balanced power diagrams (GBPD) with the radial marker restriction.

Grain ``i`` of a GBPD is ``{x : |x - s_i|^2_{M_i} - r_i <= |x - s_j|^2_{M_j} - r_j for all j}``
with ``|y|^2_M = y^T M y``. The model restricts ``M_i = Q_i^T D_i Q_i``: ``D_i`` diagonal and
``Q_i`` a rotation whose first row is the radial direction ``s_i / |s_i|``, so ``D_i[0]`` weights
the radial component of ``x - s_i`` (a *small* ``D_i[0]`` relative to the others makes a grain
elongated *towards the centre*). In 3D, ``Q_i = R(e1, gamma_i) R(s~_i + e1, pi)``; in 2D,
``Q_i`` is the rotation with first row ``s~_i`` (the roll is meaningless there).

Coordinates are in pixels of the data the model came from (EBSD: 50 nm); the particle centre is
the origin.
"""

from __future__ import annotations

import dataclasses

import numpy as np

#: Smallest allowed diagonal marker entry, so every M_i stays positive definite (a small positive
#: lower bound instead of 0).
DIAG_MIN = 1e-3


@dataclasses.dataclass(frozen=True)
class GBPD:
    """A restricted GBPD in 2D or 3D.

    Parameters
    ----------
    seeds : (N, d) float array
        Seed positions in pixels, particle centre at the origin.
    diag : (N, d) float array
        Diagonal entries of ``D_i``, radial entry first; all > 0.
    offsets : (N,) float array
        Additive weights ``r_i``.
    roll : (N,) float array, optional
        Roll angles ``gamma_i`` in radians (3D only; zeros if omitted).
    """

    seeds: np.ndarray
    diag: np.ndarray
    offsets: np.ndarray
    roll: np.ndarray | None = None

    def __post_init__(self):
        seeds = np.ascontiguousarray(self.seeds, dtype=np.float64)
        if seeds.ndim != 2 or seeds.shape[1] not in (2, 3):
            raise ValueError(f"seeds must be (N, 2) or (N, 3), got {seeds.shape}")
        n, d = seeds.shape
        diag = np.ascontiguousarray(self.diag, dtype=np.float64).reshape(n, d)
        offsets = np.ascontiguousarray(self.offsets, dtype=np.float64).reshape(n)
        roll = np.zeros(n) if self.roll is None else np.ascontiguousarray(self.roll, dtype=np.float64).reshape(n)
        if np.any(~(diag > 0)):
            raise ValueError("diagonal markers must be > 0 (positive definite metrics)")
        object.__setattr__(self, "seeds", seeds)
        object.__setattr__(self, "diag", diag)
        object.__setattr__(self, "offsets", offsets)
        object.__setattr__(self, "roll", roll)

    @property
    def n(self) -> int:
        """Number of seeds (cells)."""
        return self.seeds.shape[0]

    @property
    def dim(self) -> int:
        """Spatial dimension, 2 or 3."""
        return self.seeds.shape[1]

    def frames(self) -> np.ndarray:
        """Rotations ``Q_i`` (N, d, d); row 0 of each is the radial direction."""
        return radial_frames(self.seeds, self.roll)

    def metrics(self) -> np.ndarray:
        """Metric tensors ``M_i = Q_i^T D_i Q_i`` (N, d, d)."""
        q = self.frames()
        return np.einsum("nki,nk,nkj->nij", q, self.diag, q)

    def subset(self, index) -> "GBPD":
        """The GBPD of the seeds selected by ``index`` (boolean mask or integer array).

        Parameters
        ----------
        index : bool array or int array
            Seeds to keep.

        Returns
        -------
        GBPD
            Seeds, markers and roll angles of the selection.
        """
        return GBPD(self.seeds[index], self.diag[index], self.offsets[index], self.roll[index])


def _unit_radial(seeds: np.ndarray) -> np.ndarray:
    """``s / |s|``; a seed at the origin gets ``e1``."""
    norm = np.linalg.norm(seeds, axis=1, keepdims=True)
    e1 = np.zeros_like(seeds)
    e1[:, 0] = 1.0
    return np.where(norm > 1e-12, seeds / np.where(norm > 1e-12, norm, 1.0), e1)


def radial_frames(seeds: np.ndarray, roll: np.ndarray | None = None) -> np.ndarray:
    """Radial frames ``Q_i`` of the radial marker restriction.

    Parameters
    ----------
    seeds : (N, d) array
        Seed positions (d = 2 or 3).
    roll : (N,) array, optional
        Roll angles ``gamma_i`` (3D).

    Returns
    -------
    (N, d, d) array
        Rotation matrices (det +1) with ``Q_i @ s~_i = e1``.
    """
    seeds = np.asarray(seeds, dtype=np.float64)
    n, d = seeds.shape
    u = _unit_radial(seeds)
    if d == 2:
        c, s = u[:, 0], u[:, 1]
        return np.stack([np.stack([c, s], -1), np.stack([-s, c], -1)], 1)
    # R(a, pi) = 2 a a^T - I for the unit axis a = (u + e1)/|u + e1|; for u = -e1 use a = e2.
    a = u.copy()
    a[:, 0] += 1.0
    an = np.linalg.norm(a, axis=1, keepdims=True)
    degenerate = an[:, 0] < 1e-9
    a = np.where(degenerate[:, None], np.array([0.0, 1.0, 0.0]), a / np.where(an > 1e-9, an, 1.0))
    flip = 2.0 * a[:, :, None] * a[:, None, :] - np.eye(3)
    g = np.zeros(n) if roll is None else np.asarray(roll, dtype=np.float64)
    cg, sg = np.cos(g), np.sin(g)
    rot = np.zeros((n, 3, 3))
    rot[:, 0, 0] = 1.0
    rot[:, 1, 1] = cg
    rot[:, 1, 2] = -sg
    rot[:, 2, 1] = sg
    rot[:, 2, 2] = cg
    return rot @ flip


def power_distances(g: GBPD, points: np.ndarray) -> np.ndarray:
    """All power distances ``|x - s_i|^2_{M_i} - r_i`` (P, N): the plain O(P N) reference.

    Parameters
    ----------
    g : GBPD
        The diagram (seeds, frames, diagonal metrics, offsets).
    points : (P, d) float array
        Query points ``(x, y[, z])`` in the diagram's units.

    Returns
    -------
    (P, N) float array
        Power distance of every point to every seed.
    """
    points = np.asarray(points, dtype=np.float64)
    q = g.frames()
    diff = points[:, None, :] - g.seeds[None, :, :]  # (P, N, d)
    local = np.einsum("nij,pnj->pni", q, diff)
    return np.einsum("pni,ni->pn", local * local, g.diag) - g.offsets[None, :]


def grid_points(shape, origin=None, spacing=1.0) -> np.ndarray:
    """Coordinates ``(x, y[, z])`` of the points of a grid indexed ``[(z,) y, x]``.

    Point ``index`` lies at ``origin + spacing * index`` (``origin`` as ``(x, y[, z])``); the
    default origin centres the grid on 0.

    Parameters
    ----------
    shape : sequence of int
        Grid shape ``(ny, nx)`` or ``(nz, ny, nx)``.
    origin : (d,) array-like, optional
        Coordinates ``(x, y[, z])`` of point ``index = 0``; default centres the grid on 0.
    spacing : float, default 1.0
        Distance between neighbouring points.

    Returns
    -------
    (*shape, d) float array
        Point coordinates, last axis ``(x, y[, z])``.
    """
    shape = tuple(int(s) for s in shape)
    d = len(shape)
    origin = _grid_origin(shape, origin, spacing)
    axes = [origin[k] + spacing * np.arange(shape[d - 1 - k]) for k in range(d)]  # x, y, z
    mesh = np.meshgrid(*axes[::-1], indexing="ij")  # arrays indexed [(z,) y, x]
    return np.stack(mesh[::-1], axis=-1)


def _grid_origin(shape, origin, spacing) -> np.ndarray:
    d = len(shape)
    if origin is None:
        return np.array([-(shape[d - 1 - k] - 1) * spacing / 2.0 for k in range(d)], dtype=np.float64)
    origin = np.asarray(origin, dtype=np.float64).reshape(-1)
    if origin.shape != (d,):
        raise ValueError(f"origin must have {d} entries (x, y[, z]), got {origin.shape}")
    return origin
