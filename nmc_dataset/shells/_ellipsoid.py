"""The ellipsoid-mixture shell model: a per-particle base ellipsoid plus a scale mixture on the rest.

Why this model
--------------
The harmonics of an ellipsoid's radius function are not independent of each other: its
degrees 4, 6, 8, ... are fixed by its axes and orientation, which also fix degree 2. A model that
draws the pattern of ``l >= 3`` at random (``independent``, ``scale_mixture``) puts bumps where an
ellipsoid-like particle is convex, and so misses compactness, sphericity and aspect ratio of
ellipsoid-like particles even when every per-degree spread is right. Here each particle is an
ellipsoid — its semi-axes drawn jointly with its roughness — plus a residual that carries only
what the ellipsoid does not explain.

Definition
----------
**Base ellipsoid.** An ellipsoid centred at the origin with semi-axes ``e_k`` along the columns
``q_k`` of a rotation ``Q`` has the radius function

    r_E(u) = (uᵀ A u)^{-1/2},     A = Q diag(e_k^{-2}) Qᵀ   (symmetric positive definite).

Its harmonics are even (``r_E(−u) = r_E(u)``). A particle's ellipsoid is the one whose degrees 0
and 2 equal the particle's: the six equations ``P_{l≤2} r_E(A) = (a_00, a_2m)`` (one
``a_00`` and five ``a_2m``; the ellipsoid is centred, so ``l = 1`` is not used) are solved for the
six entries of ``A`` by damped Newton steps, ``∂r_E/∂A_ij = −½ r_E³ u_i u_j``, starting from the
ellipsoid whose ``r^{-2}`` has the particle's ``l ≤ 2`` part (a linear least-squares problem:
quadratic forms in ``u`` span exactly degrees 0 and 2). Projections ``P`` are Gauss-Legendre ×
uniform-azimuth quadratures (:func:`quadrature`); the ellipsoid's harmonics up to ``L`` are
computed with the same quadrature at fit and at sampling time, so ``a = e(A) + d`` holds exactly.

**Residual.** ``d = a − e(A)`` has ``d_00 = d_2m = 0`` (up to the Newton tolerance); its degrees
``l = 1`` and ``3..L`` carry the roughness and the centring residue.

**Model.** With ``e_1 >= e_2 >= e_3`` the semi-axes, the per-particle summaries are

    x = (log ē, log(e_1/e_2), log(e_2/e_3), log s_1, log s_b ...)

(``ē`` the geometric mean semi-axis, the two log axis ratios ``>= 0``: their kernel is reflected at
0, Silverman 1986, sec. 2.10; ``s_b`` the RMS of the residual's normalised coefficients
``d_lm/σ_l`` in band ``b``, bands ``[1]`` and ``3..L`` split into ``n_bands`` contiguous groups,
``σ_l`` the residual's RMS per degree), exactly as in the scale mixture
(:mod:`nmc_dataset.shells._mixture`): ``x`` follows a Gaussian kernel density estimate with
per-variable widths by leave-one-out likelihood, so size, elongation, flatness and roughness
keep their joint law (flat particles rougher, large ones more elongated, ...). A sampled shell
is

    a = e(Q diag(e_k^{-2}) Qᵀ) + Σ_b s_b √n_b u_b σ_l,

with ``Q`` Haar-random (isotropy), ``u_b`` uniform on the unit sphere of the band (Fang, Kotz &
Ng 1990, ch. 2), all independent given ``x``. Shells with non-positive radius or too small a
volume are redrawn as for every model.

What it assumes beyond isotropy: the roughness is uniform in direction relative to the
ellipsoid's axes, and within a band its split over degrees (after dividing by ``σ_l``) and
orders is uniform. A sphere-like population has ``e_1 ≈ e_2 ≈ e_3`` and its degree-2 part is
then the ellipsoid's; the model contains smooth and rough, spherical and elongated particles.
It has no closed-form density (the map from ``(A, d)`` to ``a`` is nonlinear in ``A``), so the
hold-out log-likelihood is not tabled for it.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from nmc_dataset.shells._harmonics import random_rotations, sh_basis
from nmc_dataset.shells._mixture import default_bands, loo_bandwidths

__all__ = ["EllipsoidMixture", "ellipsoid_coefficients", "fit_ellipsoids", "quadrature"]

_TINY = 1e-9
_N_THETA = 16  # Gauss-Legendre nodes in cos θ: exact to degree 31; ellipsoid harmonics to L = 9 within 1e-5 voxel


@functools.lru_cache(maxsize=4)
def quadrature(n_theta: int = _N_THETA):
    """Gauss-Legendre (in cos θ) × uniform-azimuth nodes on the sphere.

    Returns ``(u, w)``: ``(n_theta * 2 n_theta, 3)`` unit vectors and weights summing to 4π; the
    rule integrates spherical polynomials of degree ``<= 2 n_theta − 1`` exactly.
    """
    x, wx = np.polynomial.legendre.leggauss(int(n_theta))
    n_phi = 2 * int(n_theta)
    phi = 2 * np.pi * np.arange(n_phi) / n_phi
    st = np.sqrt(1 - x**2)
    u = np.stack([np.outer(st, np.cos(phi)), np.outer(st, np.sin(phi)), np.outer(x, np.ones(n_phi))], -1)
    w = np.outer(wx, np.full(n_phi, 2 * np.pi / n_phi))
    u, w = u.reshape(-1, 3), w.ravel()
    u.setflags(write=False)
    w.setflags(write=False)
    return u, w


def _quad_forms(u: np.ndarray) -> np.ndarray:
    """``(P, 6)`` values of the quadratic forms ``x², y², z², 2xy, 2xz, 2yz`` (``uᵀAu = Σ_p A_p φ_p``)."""
    x, y, z = u.T
    return np.column_stack([x * x, y * y, z * z, 2 * x * y, 2 * x * z, 2 * y * z])


def _sym(A6: np.ndarray) -> np.ndarray:
    """``(n, 3, 3)`` symmetric matrices from the six entries ``(xx, yy, zz, xy, xz, yz)``."""
    a = np.asarray(A6)
    return np.stack(
        [
            np.stack([a[:, 0], a[:, 3], a[:, 4]], -1),
            np.stack([a[:, 3], a[:, 1], a[:, 5]], -1),
            np.stack([a[:, 4], a[:, 5], a[:, 2]], -1),
        ],
        1,
    )


def _six(M: np.ndarray) -> np.ndarray:
    return np.column_stack([M[:, 0, 0], M[:, 1, 1], M[:, 2, 2], M[:, 0, 1], M[:, 0, 2], M[:, 1, 2]])


@functools.lru_cache(maxsize=8)
def _tables(L: int, n_theta: int = _N_THETA):
    """Quadrature tables: full-sphere basis, upper-hemisphere even-degree projector, l<=2 columns."""
    u, w = quadrature(n_theta)
    B = sh_basis(L, u)  # (P, K)
    phi = _quad_forms(u)
    even = np.concatenate([np.arange(l * l, (l + 1) ** 2) for l in range(0, L + 1, 2)])
    up = u[:, 2] > 0  # r_E is even: integrate over the upper half with double weight
    proj_even = (2 * w[up])[:, None] * B[np.ix_(up, even)]  # (P/2, K_even): r_E(u_up) @ proj -> e_even
    low = np.array([0, 4, 5, 6, 7, 8]) if L >= 2 else np.array([0])
    t = {
        "u": u,
        "w": w,
        "B": B,
        "phi": phi,
        "phi_up": phi[up],
        "even": even,
        "proj_even": proj_even,
        "low": low,
        "proj_low": w[:, None] * B[:, low],
    }
    for v in t.values():
        v.setflags(write=False)
    return t


def ellipsoid_coefficients(A6: np.ndarray, L: int, n_theta: int = _N_THETA) -> np.ndarray:
    """SH coefficients (degree ``L``, odd degrees 0) of the ellipsoids ``uᵀAu = 1``.

    Parameters
    ----------
    A6 : ndarray (n, 6)
        Entries ``(xx, yy, zz, xy, xz, yz)`` of positive definite ``A`` (1/voxel²).
    L : int
        Degree.
    n_theta : int, default 16
        Gauss-Legendre nodes in ``cos θ`` of the projection quadrature (:func:`quadrature`; ``2 n_theta``
        azimuths); use the value the ellipsoids were fitted with so that ``a = e(A) + d`` holds exactly.

    Returns
    -------
    ndarray (n, (L+1)**2)
        The projection of ``r_E(u) = (uᵀAu)^{-1/2}`` on the real SH up to ``L`` (voxels).
    """
    t = _tables(int(L), int(n_theta))
    A6 = np.atleast_2d(np.asarray(A6, dtype=np.float64))
    out = np.zeros((A6.shape[0], (L + 1) ** 2))
    step = 8192
    for a in range(0, A6.shape[0], step):
        q = A6[a : a + step] @ t["phi_up"].T
        out[a : a + step, t["even"]] = (1.0 / np.sqrt(np.maximum(q, 1e-300))) @ t["proj_even"]
    return out


def fit_ellipsoids(coeffs: np.ndarray, n_theta: int = _N_THETA, max_iter: int = 30, tol: float = 1e-9):
    """Per particle the ellipsoid whose degrees 0 and 2 equal the particle's (see the module docstring).

    Parameters
    ----------
    coeffs : ndarray (n, (L+1)**2), L >= 2
        Measured coefficients (voxels).
    n_theta : int, default 16
        Gauss-Legendre nodes in ``cos θ`` of the projection quadrature (:func:`quadrature`).
    max_iter : int, default 30
        Most damped Newton steps (each with up to 12 step halvings that keep ``A`` positive definite).
    tol : float, default 1e-9
        Convergence tolerance relative to ``a_00``: iteration stops once the largest error of the six
        degree-0 and degree-2 coefficients is at most ``tol · a_00``.

    Returns
    -------
    A6 : ndarray (n, 6)
        The ellipsoids' matrices (entries ``xx, yy, zz, xy, xz, yz``).
    converged : ndarray of bool (n,)
        Whether ``|P_{l<=2} r_E − a_{l<=2}|`` fell below ``max(tol, 1e-6) · a_00``; otherwise the
        closest ellipsoid found is returned.
    """
    c = np.atleast_2d(np.asarray(coeffs, dtype=np.float64))
    L = round(np.sqrt(c.shape[1])) - 1
    if L < 2:
        raise ValueError("an ellipsoid model needs degree >= 2")
    t = _tables(L, int(n_theta))
    target = c[:, t["low"]]
    # start: the quadric whose r^-2 has the particle's degrees <= 2 (weighted least squares)
    r = np.maximum(c @ t["B"].T, 0.05 * c[:, :1] / np.sqrt(4 * np.pi))
    G = t["phi"].T @ (t["w"][:, None] * t["phi"])
    A = np.linalg.solve(G, (((r**-2) * t["w"]) @ t["phi"]).T).T
    A = _make_pd(A)
    # Jacobian tables: J[n, k, p] = Σ_i w_i Y_k(u_i) (−½ r_i³) φ_p(u_i)
    YP = np.einsum("ik,ip->ikp", t["proj_low"], t["phi"]).reshape(t["u"].shape[0], -1)

    def resid(A6, tgt):
        q = np.maximum(A6 @ t["phi"].T, 1e-300)
        rr = q**-0.5
        return rr @ t["proj_low"] - tgt, rr

    F, rr = resid(A, target)
    err = np.max(np.abs(F), axis=1)
    done = err <= tol * c[:, 0]
    for _ in range(max_iter):
        act = np.flatnonzero(~done)
        if not act.size:
            break
        J = (-0.5 * rr[act] ** 3 @ YP).reshape(act.size, -1, 6)
        try:
            step = np.linalg.solve(J, -F[act][..., None])[..., 0]
        except np.linalg.LinAlgError:
            step = np.stack([np.linalg.lstsq(j, -f, rcond=None)[0] for j, f in zip(J, F[act])])
        lam = np.ones(act.size)
        improved = np.zeros(act.size, dtype=bool)
        for _h in range(12):  # step halving: stay positive definite and lower the residual
            trial = A[act] + lam[:, None] * step
            pd = np.linalg.eigvalsh(_sym(trial))[:, 0] > 0
            Ft, rt = resid(np.where(pd[:, None], trial, A[act]), target[act])
            et = np.where(pd, np.max(np.abs(Ft), axis=1), np.inf)
            ok = (et < err[act]) & ~improved
            idx = act[ok]
            A[idx], F[idx], rr[idx], err[idx] = trial[ok], Ft[ok], rt[ok], et[ok]
            improved |= ok
            if improved.all():
                break
            lam = np.where(improved, lam, lam / 2)
        done = err <= tol * c[:, 0]
        done[act[~improved]] = True  # no descent: the closest ellipsoid found
    return A, err <= np.maximum(tol, 1e-6) * c[:, 0]


def _make_pd(A6: np.ndarray) -> np.ndarray:
    """Clip the eigenvalues of symmetric matrices to at least 1 % of their largest (positive definite)."""
    lam, V = np.linalg.eigh(_sym(A6))
    top = np.maximum(lam[:, -1:], 1e-12)
    lam = np.maximum(lam, 0.01 * top)
    return _six(np.einsum("nik,nk,njk->nij", V, lam, V))


def _axes(A6: np.ndarray):
    """Semi-axes (descending) and axis frames of the ellipsoids."""
    lam, V = np.linalg.eigh(_sym(A6))  # ascending eigenvalues = descending semi-axes
    return 1.0 / np.sqrt(np.maximum(lam, 1e-300)), V


def _from_axes(e: np.ndarray, Q: np.ndarray) -> np.ndarray:
    return _six(np.einsum("nik,nk,njk->nij", Q, e**-2.0, Q))


@dataclasses.dataclass
class EllipsoidMixture:
    """Base ellipsoid drawn jointly with the residual roughness (see the module docstring).

    Parameters
    ----------
    degree : int
        SH degree L (>= 2).
    bands : list of list of int
        Residual degree bands (``[1]`` and ``3..L``; each exactly once).
    spread : ndarray (L+1,)
        Residual ``σ_l`` (voxels); entries 0 and 2 unused (0).
    points : ndarray (n, 3 + B)
        Measured ``(log ē, log(e1/e2), log(e2/e3), log s_b ...)``.
    kernel_cov : ndarray (d, d)
        Covariance of the Gaussian kernel (diagonal), ``d = 3 + B`` as the columns of ``points``.
    converged_fraction : float, default 1.0
        Share of particles whose ellipsoid matched degrees 0 and 2 to the tolerance.
    """

    degree: int
    bands: list
    spread: np.ndarray
    points: np.ndarray
    kernel_cov: np.ndarray
    converged_fraction: float = 1.0

    VERSION = 1

    @staticmethod
    def residual_bands(L: int, n_bands: int) -> list[list[int]]:
        """``[1]`` and ``3..L`` in ``n_bands`` contiguous groups (degrees 0 and 2 are the ellipsoid's)."""
        return [b for b in default_bands(L, n_bands) if b != [2]]

    def _band_index(self):
        out = []
        for band in self.bands:
            idx = np.concatenate([np.arange(l * l, (l + 1) ** 2) for l in band])
            sig = np.concatenate([np.full(2 * l + 1, self.spread[l]) for l in band])
            out.append((idx, sig))
        return out

    @classmethod
    def decompose(cls, coeffs, n_theta: int = _N_THETA):
        """``(A6, ellipsoid coefficients, residual, converged)`` of measured coefficients."""
        c = np.atleast_2d(np.asarray(coeffs, dtype=np.float64))
        L = round(np.sqrt(c.shape[1])) - 1
        A6, conv = fit_ellipsoids(c, n_theta)
        e = ellipsoid_coefficients(A6, L, n_theta)
        return A6, e, c - e, conv

    @staticmethod
    def _summaries(A6, resid, bands, spread) -> np.ndarray:
        ax, _ = _axes(A6)
        la = np.log(ax)
        cols = [la.mean(axis=1), la[:, 0] - la[:, 1], la[:, 1] - la[:, 2]]
        for band in bands:
            idx = np.concatenate([np.arange(l * l, (l + 1) ** 2) for l in band])
            sig = np.concatenate([np.full(2 * l + 1, spread[l]) for l in band])
            s = np.sqrt(np.mean((resid[:, idx] / sig) ** 2, axis=1))
            cols.append(np.log(np.maximum(s, _TINY)))
        return np.column_stack(cols)

    def summaries(self, coeffs) -> np.ndarray:
        """``x`` of coefficient vectors (for diagnostics and tests)."""
        A6, _, d, _ = self.decompose(coeffs)
        return self._summaries(A6, d, self.bands, self.spread)

    @classmethod
    def fit(cls, coeffs, n_bands: int = 1) -> EllipsoidMixture:
        """Fit to measured coefficients ``(n, (L+1)**2)`` (n >= 3, L >= 2, all ``a_00 > 0``)."""
        c = np.asarray(coeffs, dtype=np.float64)
        L = round(np.sqrt(c.shape[1])) - 1
        if L < 2:
            raise ValueError("an ellipsoid mixture needs degree >= 2")
        if np.any(c[:, 0] <= 0):
            raise ValueError("a_00 must be positive for every particle")
        A6, _, d, conv = cls.decompose(c)
        bands = cls.residual_bands(L, n_bands)
        spread = np.zeros(L + 1)
        for l in range(1, L + 1):
            if l != 2:
                spread[l] = max(float(np.sqrt(np.mean(d[:, l * l : (l + 1) ** 2] ** 2))), _TINY)
        pts = cls._summaries(A6, d, bands, spread)
        k = pts.shape[1]
        cov = np.atleast_2d(np.cov(pts, rowvar=False))
        cov = cov + np.eye(k) * 1e-12 * max(1.0, float(np.trace(cov)))
        return cls(
            degree=L,
            bands=bands,
            spread=spread,
            points=pts,
            kernel_cov=loo_bandwidths(pts, cov),
            converged_fraction=float(conv.mean()),
        )

    def draw_raw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` coefficient vectors (vectorised; no validity check)."""
        n = int(n)
        d = self.points.shape[1]
        chol = np.linalg.cholesky(self.kernel_cov)
        idx = rng.integers(0, self.points.shape[0], size=n)
        x = self.points[idx] + rng.standard_normal((n, d)) @ chol.T
        # the axis ratios are >= 0: a kernel reaching below 0 is reflected (Silverman 1986, sec. 2.10)
        g, r1, r2 = x[:, 0], np.abs(x[:, 1]), np.abs(x[:, 2])
        e = np.exp(np.column_stack([g + (2 * r1 + r2) / 3, g + (r2 - r1) / 3, g - (r1 + 2 * r2) / 3]))
        out = ellipsoid_coefficients(_from_axes(e, random_rotations(n, rng)), self.degree)
        for b, (cidx, sig) in enumerate(self._band_index()):
            u = rng.standard_normal((n, cidx.size))
            u /= np.linalg.norm(u, axis=1, keepdims=True)
            out[:, cidx] += (np.exp(x[:, 3 + b]) * np.sqrt(cidx.size))[:, None] * u * sig
        return out

    def to_json(self) -> dict:
        return {
            "kind": "ellipsoid_mixture",
            "version": self.VERSION,
            "bands": [list(map(int, b)) for b in self.bands],
            "spread": [float(v) for v in self.spread],
            "variables": ["log_mean_semi_axis", "log_e1_over_e2", "log_e2_over_e3"]
            + [f"log_s_band{b}" for b in range(len(self.bands))],
            "ellipsoid": "degrees 0 and 2 of (u^T A u)^-1/2 equal the particle's; A = Q diag(e^-2) Q^T, "
            "Q Haar-random when sampled",
            "quadrature_n_theta": _N_THETA,
            "converged_fraction": float(self.converged_fraction),
            "kernel": "gaussian, diagonal covariance h_j^2 var_j, h_j by leave-one-out likelihood",
            "kernel_cov": [[float(v) for v in row] for row in self.kernel_cov],
            "points": [[float(v) for v in row] for row in self.points],
        }

    @classmethod
    def from_json(cls, d: dict, degree: int) -> EllipsoidMixture:
        if int(d.get("version", 1)) > cls.VERSION:
            raise ValueError(
                f"ellipsoid_mixture block version {d['version']} is newer than this reader ({cls.VERSION})"
            )
        if degree < 2:
            raise ValueError("an ellipsoid mixture needs degree >= 2")
        bands = [list(map(int, b)) for b in d["bands"]]
        flat = sorted(l for b in bands for l in b)
        if flat != [l for l in range(1, degree + 1) if l != 2]:
            raise ValueError(f"bands must cover degrees 1 and 3..{degree} exactly once, got {bands}")
        pts = np.asarray(d["points"], dtype=np.float64)
        cov = np.asarray(d["kernel_cov"], dtype=np.float64)
        spread = np.asarray(d["spread"], dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 3 + len(bands) or cov.shape != (pts.shape[1],) * 2:
            raise ValueError("points / kernel_cov do not match the bands")
        if spread.shape != (degree + 1,) or any(spread[l] <= 0 for l in flat):
            raise ValueError("spread must list degree 0..L with positive values for the residual degrees")
        np.linalg.cholesky(cov)
        return cls(
            degree=int(degree),
            bands=bands,
            spread=spread,
            points=pts,
            kernel_cov=cov,
            converged_fraction=float(d.get("converged_fraction", 1.0)),
        )
