"""The scale-mixture shell model: per-particle roughness drawn jointly with size.

Why this model
--------------
Measured particles are not a cloud of independently rough shells: most are smooth and a few
are rough, and the roughness of one particle is shared by all its degrees. Drawing every
coefficient independently (the paper's model) averages that out and produces shells that are
all moderately rough, so compactness and sphericity come out too low and too spread even when
each coefficient's marginal law is exact. The model here keeps each particle's *amount* of
roughness as one latent quantity, drawn jointly with the size, and only the *pattern* of the
roughness (the direction of the coefficient vector) at random.

Definition
----------
For degree ``l >= 1`` let ``σ_l`` be the RMS of the measured ``a_lm`` over particles and orders.
The degrees are grouped into *bands*: ``l = 1`` on its own (radii are measured about the
centre of mass, so ``l = 1`` is a centring residue, second order in the roughness, and not a
shape degree like the others), ``l = 2`` on its own (the ellipsoidal part: elongation, the aspect
ratio; measured high degrees of smooth particles are dominated by measurement noise, so sharing
a band with them would misplace a particle's elongation), then ``l = 3..L`` as one band
(``scale_mixture``) or split into up to three contiguous bands (``scale_mixture_bands``, e.g.
3-4, 5-7, 8-9 for ``L = 9``). For a band
``b`` with ``n_b`` coefficients the normalised vector ``y_b = (a_lm / σ_l)_{(l,m) in b}`` is written
as ``y_b = s_b · √n_b · u_b`` with the band's roughness ``s_b = ‖y_b‖ / √n_b`` (RMS of the normalised
coefficients, 1 on average) and a unit vector ``u_b``. The model is

* ``x = (log a_00, log s_1, ..., log s_B)`` ~ a Gaussian kernel density estimate of the measured
  particles' ``x``. The kernel is diagonal, ``diag(h_j² var_j)``, with each variable's factor
  ``h_j`` chosen by maximising the leave-one-out log-likelihood (a common factor on 0.05-1.5 times
  Scott's ``n^{-1/(d+4)}`` first, then each ``h_j`` in turn; :func:`loo_bandwidths`). Scott's rule
  assumes a unimodal density and smears a smooth and a rough population into each other; the
  cross-validated widths do not (Silverman, *Density Estimation*, 1986, sec. 3.4.3). Size and
  roughness are therefore drawn *together*, with whatever
  dependence the data hold (roughness growing with size, a smooth and a rough population),
  and ``a_00`` has positive support;
* ``u_b`` uniform on the unit sphere of dimension ``n_b − 1``, independently per band and of ``x``.

Degree 2 and its shape (``l2_shape``, default)
    The ``l = 2`` part of a radius function is a quadratic form ``uᵀ T u`` with a traceless
    symmetric tensor ``T`` (``a_2m = (8π/15) tr(T M_m)``, ``Y_2m(u) = uᵀ M_m u``). Under physical
    rotations of the particle ``T`` turns as a tensor: its eigenvalues are invariant, i.e. the
    norm (``s_2``) and the *shape* ``J₃ = 3√6 det(T/‖T‖) = cos 3θ`` (``+1`` prolate, ``−1`` oblate,
    0 triaxial). Every isotropic law of the five ``a_2m`` is therefore a law of ``(s_2, J₃)`` times
    a uniformly random orientation, and this model draws ``z = artanh(J₃)`` (``J₃`` clipped to
    ±0.999) jointly with size and roughness in the kernel density, then ``T = Q diag(λ) Qᵀ`` with
    ``λ_k ∝ cos(θ − 2πk/3)`` and a Haar-random rotation ``Q``. Elongated, ellipsoid-like
    particles keep their shape; a uniform direction on the 4-sphere would make them as often
    oblate as prolate. The density gains the factor ``2 / (1 − J₃²)`` (the Weyl volume element
    of symmetric matrices, ``ρ⁴ |sin 3θ| dρ dθ dQ``) against the uniform direction.

Every vector ``y_b`` whose law is invariant under rotations of its ``n_b`` coordinates has exactly
this form (a radius independent of a uniform direction: Fang, Kotz & Ng, *Symmetric Multivariate
and Related Distributions*, 1990, ch. 2), so the only assumption beyond isotropy is that, once
the amount of roughness in a band is fixed, its distribution over the degrees of the band (after
dividing by ``σ_l``) and over the orders is uniform. The paper's independent Gaussian model is
the special case of a chi-distributed ``s_b`` independent of ``a_00``. Sampling is exact: the
sampled particles' ``(a_00, s_b)`` follow the kernel density estimate, so their roughness
distribution matches the measured one up to the kernel smoothing (no extra chi noise, as an
``s · N(0, 1)`` construction would add).

Density (for held-out log-likelihoods): with ``ρ_b = s_b √n_b`` and ``A_n = 2π^{n/2}/Γ(n/2)``,

    log p(a) = log p_KDE(x) − log a_00 − Σ_b [ log s_b + log √n_b + log A_{n_b}
               + (n_b − 1) log ρ_b + Σ_{(l,m) in b} log σ_l ].
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
from scipy import special
from scipy.special import logsumexp

from nmc_dataset.shells._harmonics import icosphere, random_rotations, sh_basis

__all__ = ["ScaleMixture", "default_bands", "l2_tensor_basis", "loo_bandwidth", "loo_bandwidths"]

_TINY = 1e-9
_J3_CLIP = 0.999


@functools.lru_cache(maxsize=1)
def l2_tensor_basis() -> np.ndarray:
    """Traceless symmetric ``M_m`` (5, 3, 3), ``m = -2..2``, with ``Y_2m(u) = uᵀ M_m u`` (our SH convention)."""

    u, _ = icosphere(2)
    Y = sh_basis(2, u)[:, 4:9]
    x, y, z = u.T
    A = np.column_stack([x * x, y * y, z * z, 2 * x * y, 2 * x * z, 2 * y * z])
    sol, *_ = np.linalg.lstsq(A, Y, rcond=None)
    M = np.zeros((5, 3, 3))
    for m in range(5):
        q = sol[:, m]
        M[m] = [[q[0], q[3], q[4]], [q[3], q[1], q[5]], [q[4], q[5], q[2]]]
    M.setflags(write=False)
    return M


def _l2_shape(a2: np.ndarray) -> np.ndarray:
    """``J₃ = 3√6 det(T/‖T‖)`` of l = 2 coefficient rows ``(n, 5)`` (0 for a zero tensor)."""
    T = np.einsum("nm,mij->nij", a2, l2_tensor_basis())
    nrm = np.sqrt(np.einsum("nij,nij->n", T, T))
    safe = np.where(nrm > 0, nrm, 1.0)
    return np.where(nrm > 0, 3 * np.sqrt(6) * np.linalg.det(T / safe[:, None, None]), 0.0)


def _l2_from_shape(j3: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unit-norm l = 2 coefficient rows with shape ``J₃`` and a Haar-random orientation."""

    theta = np.arccos(np.clip(j3, -1, 1)) / 3
    lam = np.stack([np.cos(theta - 2 * np.pi * k / 3) for k in range(3)], axis=1)
    Q = random_rotations(j3.size, rng)
    T = np.einsum("nik,nk,njk->nij", Q, lam, Q)
    a = (8 * np.pi / 15) * np.einsum("nij,mij->nm", T, l2_tensor_basis())
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def default_bands(L: int, n_bands: int) -> list[list[int]]:
    """Degree bands: ``[1]`` and ``[2]`` on their own, then ``3..L`` in ``n_bands`` contiguous groups."""
    bands: list[list[int]] = [[l] for l in range(1, min(L, 2) + 1)]
    if L >= 3:
        k = max(1, min(int(n_bands), L - 2))
        bands += [list(map(int, g)) for g in np.array_split(np.arange(3, L + 1), k)]
    return bands


def loo_bandwidth(points: np.ndarray, cov: np.ndarray, max_points: int = 1000) -> float:
    """Kernel factor ``h`` (kernel covariance ``h² cov``) maximising the leave-one-out log-likelihood.

    Searched on 16 geometric steps from 0.05 to 1.5 times Scott's factor; at most ``max_points``
    points (a fixed stride through them) enter the search.
    """

    x = np.asarray(points, dtype=np.float64)
    n, d = x.shape
    scott = n ** (-1.0 / (d + 4))
    if n < 3:
        return scott
    sub = x[:: max(1, int(np.ceil(n / max_points)))]
    m = sub.shape[0]
    w = np.linalg.solve(np.linalg.cholesky(cov), sub.T).T  # whitened
    sq = np.einsum("ij,ij->i", w, w)
    q = np.maximum(sq[:, None] + sq[None, :] - 2 * w @ w.T, 0.0)
    np.fill_diagonal(q, np.inf)
    scott_m = m ** (-1.0 / (d + 4))
    best, best_h = -np.inf, scott_m
    for f in np.geomspace(0.05, 1.5, 16):
        h = f * scott_m
        ll = float(np.sum(logsumexp(-0.5 * q / h**2, axis=1)) - m * d * np.log(h))
        if ll > best:
            best, best_h = ll, h
    return float(best_h * scott / scott_m)  # the same multiple of Scott's factor for all n points


def loo_bandwidths(points: np.ndarray, cov: np.ndarray, max_points: int = 500) -> np.ndarray:
    """Per-variable kernel standard deviations by leave-one-out likelihood (a diagonal kernel).

    Starts from :func:`loo_bandwidth` (one factor times each variable's standard deviation) and
    refines each variable's factor in turn (two sweeps, factors 0.3-3 on 11 geometric steps):
    a variable split into populations (a smooth and a rough one) gets a narrow kernel, a smooth
    unimodal one a wide kernel. At most ``max_points`` points (a fixed stride) enter the search.
    Returns the kernel covariance ``diag(h_j² var_j)``.
    """
    x = np.asarray(points, dtype=np.float64)
    n, d = x.shape
    sd = np.sqrt(np.maximum(np.diag(cov), 1e-300))
    if n < 3:
        return np.diag((n ** (-1.0 / (d + 4)) * sd) ** 2)
    sub = x[:: max(1, int(np.ceil(n / max_points)))] / sd
    m = sub.shape[0]
    D = np.stack([(sub[:, None, j] - sub[None, :, j]) ** 2 for j in range(d)])  # (d, m, m)
    to_m = m ** (-1.0 / (d + 4)) / n ** (-1.0 / (d + 4))
    h = np.full(d, loo_bandwidth(points, np.diag(sd**2), max_points) * to_m)
    q = np.tensordot(1.0 / h**2, D, axes=(0, 0))
    np.fill_diagonal(q, np.inf)  # leave one out

    def ll(qq, hh):
        qmin = qq.min(axis=1, keepdims=True)
        lse = np.log(np.exp(-0.5 * (qq - qmin)).sum(axis=1)) - 0.5 * qmin[:, 0]
        return float(lse.sum() - m * np.sum(np.log(hh)))

    best = ll(q, h)
    for _ in range(2):
        for j in range(d):
            hj = h[j]
            for f in np.geomspace(0.3, 3.0, 11):
                qt = q + D[j] * (1.0 / (hj * f) ** 2 - 1.0 / hj**2)  # only variable j's width changes
                trial = h.copy()
                trial[j] = hj * f
                v = ll(qt, trial)
                if v > best:
                    best, h, q_new = v, trial, qt
            if h[j] != hj:
                q = q_new
    return np.diag((h / to_m * sd) ** 2)


@dataclasses.dataclass
class ScaleMixture:
    """Per-band latent roughness drawn jointly with ``a_00`` (see the module docstring).

    Parameters
    ----------
    degree : int
        SH degree L.
    bands : list of list of int
        Degrees of each band (every degree 1..L exactly once).
    spread : ndarray (L+1,)
        ``σ_l`` (voxels); ``spread[0]`` is unused (0).
    points : ndarray (n, 1 + B)
        Measured ``(log a_00, log s_1, ..., log s_B)``.
    kernel_cov : ndarray (d, d)
        Covariance of the Gaussian kernel.
    l2_shape : bool
        ``points`` has a last column ``artanh(J₃)`` of degree 2 and band ``[2]`` is drawn as a
        tensor of that shape (see the module docstring).
    """

    degree: int
    bands: list
    spread: np.ndarray
    points: np.ndarray
    kernel_cov: np.ndarray
    l2_shape: bool = False

    # ------------------------------------------------------------------ helpers
    def _band_index(self):
        """Per band the coefficient indices and the per-coefficient σ."""
        out = []
        for band in self.bands:
            idx = np.concatenate([np.arange(l * l, (l + 1) ** 2) for l in band])
            sig = np.concatenate([np.full(2 * l + 1, self.spread[l]) for l in band])
            out.append((idx, sig))
        return out

    @staticmethod
    def summaries(coeffs: np.ndarray, bands, spread, l2_shape: bool = False) -> np.ndarray:
        """``(log a_00, log s_b[, artanh J₃])`` of coefficient vectors (``s_b`` floored at 1e-9).

        Parameters
        ----------
        coeffs : (n, (L+1)**2) float array
            Coefficient vectors (voxels).
        bands : list of list of int
            Degrees of each band.
        spread : (L+1,) float array
            ``σ_l`` per degree (voxels).
        l2_shape : bool, default False
            Append the ``artanh J₃`` column of the degree-2 shape.

        Returns
        -------
        (n, 1 + B[+1]) float array
            The summaries, one row per vector.
        """
        c = np.asarray(coeffs, dtype=np.float64)
        cols = [np.log(np.maximum(c[:, 0], _TINY))]
        for band in bands:
            idx = np.concatenate([np.arange(l * l, (l + 1) ** 2) for l in band])
            sig = np.concatenate([np.full(2 * l + 1, spread[l]) for l in band])
            s = np.sqrt(np.mean((c[:, idx] / sig) ** 2, axis=1))
            cols.append(np.log(np.maximum(s, _TINY)))
        if l2_shape:
            cols.append(np.arctanh(np.clip(_l2_shape(c[:, 4:9]), -_J3_CLIP, _J3_CLIP)))
        return np.column_stack(cols)

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(cls, coeffs, n_bands: int = 1, l2_shape: bool = True) -> ScaleMixture:
        """Fit to measured coefficients ``(n, (L+1)**2)`` (n >= 3, all ``a_00 > 0``).

        Parameters
        ----------
        coeffs : (n, (L+1)**2) float array
            Measured coefficients (voxels).
        n_bands : int, default 1
            Bands of the degrees ``2..L`` (``l = 1`` is always its own band).
        l2_shape : bool, default True
            Draw degree 2 as a tensor of the measured shape (when ``[2]`` is a band of its own).

        Returns
        -------
        ScaleMixture
            Kernel points at the measured summaries, bandwidths by leave-one-out likelihood.

        Raises
        ------
        ValueError
            If some ``a_00 <= 0``.
        """
        c = np.asarray(coeffs, dtype=np.float64)
        K = c.shape[1]
        L = round(np.sqrt(K)) - 1
        if np.any(c[:, 0] <= 0):
            raise ValueError("a_00 must be positive for every particle")
        spread = np.zeros(L + 1)
        for l in range(1, L + 1):
            spread[l] = max(float(np.sqrt(np.mean(c[:, l * l : (l + 1) ** 2] ** 2))), _TINY)
        bands = default_bands(L, n_bands)
        l2_shape = bool(l2_shape and [2] in bands)
        pts = cls.summaries(c, bands, spread, l2_shape)
        d = pts.shape[1]
        cov = np.atleast_2d(np.cov(pts, rowvar=False))
        # a degenerate direction (e.g. all particles of one size) gets a tiny kernel instead of none
        cov = cov + np.eye(d) * 1e-12 * max(1.0, float(np.trace(cov)))
        return cls(
            degree=L, bands=bands, spread=spread, points=pts, kernel_cov=loo_bandwidths(pts, cov), l2_shape=l2_shape
        )

    # ------------------------------------------------------------------ sampling
    def draw_raw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` coefficient vectors (vectorised; no validity check).

        Parameters
        ----------
        n : int
            Number of vectors.
        rng : numpy.random.Generator
            Source of the draws.

        Returns
        -------
        (n, (L+1)**2) float array
            Coefficients in voxels.
        """
        n = int(n)
        d = self.points.shape[1]
        chol = np.linalg.cholesky(self.kernel_cov)
        idx = rng.integers(0, self.points.shape[0], size=n)
        x = self.points[idx] + rng.standard_normal((n, d)) @ chol.T
        out = np.zeros((n, (self.degree + 1) ** 2))
        out[:, 0] = np.exp(x[:, 0])
        for b, (cidx, sig) in enumerate(self._band_index()):
            if self.l2_shape and self.bands[b] == [2]:
                g = _l2_from_shape(np.tanh(x[:, -1]), rng)
            else:
                g = rng.standard_normal((n, cidx.size))
                g /= np.linalg.norm(g, axis=1, keepdims=True)
            out[:, cidx] = (np.exp(x[:, 1 + b]) * np.sqrt(cidx.size))[:, None] * g * sig
        return out

    # ------------------------------------------------------------------ density
    def logpdf(self, coeffs) -> np.ndarray:
        """Log density of coefficient vectors under the model (per vector).

        Parameters
        ----------
        coeffs : (n, (L+1)**2) or ((L+1)**2,) float array
            Coefficient vectors (voxels).

        Returns
        -------
        (n,) float array
            Log density of each vector.
        """

        c = np.atleast_2d(np.asarray(coeffs, dtype=np.float64))
        x = self.summaries(c, self.bands, self.spread, self.l2_shape)
        d = x.shape[1]
        chol = np.linalg.cholesky(self.kernel_cov)
        logdet = 2 * np.sum(np.log(np.diag(chol)))
        out = np.empty(c.shape[0])
        for a in range(0, c.shape[0], 256):
            diff = x[a : a + 256, None, :] - self.points[None]  # (m, n, d)
            z = np.linalg.solve(chol, diff.reshape(-1, d).T).T.reshape(diff.shape)
            q = -0.5 * np.sum(z * z, axis=-1)
            out[a : a + 256] = (
                logsumexp(q, axis=1) - np.log(self.points.shape[0]) - 0.5 * d * np.log(2 * np.pi) - 0.5 * logdet
            )
        out -= x[:, 0]
        for b, (cidx, sig) in enumerate(self._band_index()):
            nb = cidx.size
            log_s = x[:, 1 + b]
            log_rho = log_s + 0.5 * np.log(nb)
            log_area = np.log(2.0) + 0.5 * nb * np.log(np.pi) - special.gammaln(nb / 2)
            out -= log_s + 0.5 * np.log(nb) + log_area + (nb - 1) * log_rho + np.sum(np.log(sig))
            if self.l2_shape and self.bands[b] == [2]:
                out += np.log(2.0) - np.log1p(-(np.tanh(x[:, -1]) ** 2))
        return out

    # ------------------------------------------------------------------ IO
    def to_json(self) -> dict:
        """The mixture as a JSON-able dict (the model file's ``dependence`` block)."""
        return {
            "kind": "scale_mixture",
            "bands": [list(map(int, b)) for b in self.bands],
            "spread": [float(v) for v in self.spread],
            "variables": ["log_a00"]
            + [f"log_s_band{b}" for b in range(len(self.bands))]
            + (["artanh_J3_l2"] if self.l2_shape else []),
            "l2_shape": bool(self.l2_shape),
            "kernel": "gaussian, diagonal covariance h_j^2 var_j, h_j by leave-one-out likelihood",
            "kernel_cov": [[float(v) for v in row] for row in self.kernel_cov],
            "points": [[float(v) for v in row] for row in self.points],
        }

    @classmethod
    def from_json(cls, d: dict, degree: int) -> ScaleMixture:
        """Rebuild a mixture from :meth:`to_json`'s dict, checking it.

        Parameters
        ----------
        d : dict
            ``bands``, ``points``, ``kernel_cov``, ``spread`` and optionally ``l2_shape``.
        degree : int
            SH degree L of the model.

        Returns
        -------
        ScaleMixture
            The mixture.

        Raises
        ------
        ValueError
            If the bands do not cover ``1..L`` once, the arrays do not match them, or the kernel
            covariance is not positive definite.
        """
        bands = [list(map(int, b)) for b in d["bands"]]
        flat = sorted(l for b in bands for l in b)
        if flat != list(range(1, degree + 1)):
            raise ValueError(f"bands must cover degrees 1..{degree} exactly once, got {bands}")
        pts = np.asarray(d["points"], dtype=np.float64)
        cov = np.asarray(d["kernel_cov"], dtype=np.float64)
        spread = np.asarray(d["spread"], dtype=np.float64)
        l2 = bool(d.get("l2_shape", False))
        if pts.ndim != 2 or pts.shape[1] != 1 + len(bands) + l2 or cov.shape != (pts.shape[1],) * 2:
            raise ValueError("points / kernel_cov do not match the bands")
        if spread.shape != (degree + 1,) or np.any(spread[1:] <= 0):
            raise ValueError("spread must list degree 0..L with positive values for l >= 1")
        np.linalg.cholesky(cov)  # raises LinAlgError (a ValueError) if not positive definite
        return cls(degree=int(degree), bands=bands, spread=spread, points=pts, kernel_cov=cov, l2_shape=l2)
