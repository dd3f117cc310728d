"""Local digital volume correlation (DVC) of two CT volumes, and its comparison with a known truth.

Engines
-------
``local`` (always available): subset-wise FFT cross-correlation. For every node ``p`` of a regular
grid (spacing ``step``), the subsets ``f[p ± half]`` of the reference and ``g[p ± half]`` of the
deformed volume, made zero-mean and multiplied by a 3D Hann window, are registered by
``skimage.registration.phase_cross_correlation`` (``normalization=None``: plain cross-correlation,
robust to photon noise; sub-voxel peak by matrix-multiply DFT upsampling, Guizar-Sicairos et al.,
Opt. Lett. 33, 2008): translation only, one per subset, which is the zeroth-order shape function
of local DVC. Its quality is the translation-invariant normalised rms error the same function
returns (0 = perfect match).

``spam`` (optional, GPL: ``pip install spam``): the same nodes and subsets registered by
``spam.DIC.register`` (Lucas–Kanade / Gauss–Newton on a full affine ``Φ``, Tudisco et al.,
Meas. Sci. Technol. 2017), initialised by the phase correlation's integer shift; the node's
displacement is ``Φ``'s translation at the subset centre.

Truth
-----
The displacement from state ``t−1`` to ``t`` at a node ``p`` of state ``t−1`` is
``u_t(X) − u_{t−1}(X)`` with ``X + u_{t−1}(X) = p`` (``u`` from the reference grid, solved by fixed
point, trilinear interpolation). Nodes whose subset holds a crack voxel in either state, or
whose truth is NaN, are the *crack nodes*.
"""

from __future__ import annotations

import time

import numpy as np
from scipy import ndimage
from skimage.registration import phase_cross_correlation

from nmc_dataset.errors import InputError

ENGINES = ("local", "spam")


def grid_nodes(shape, half: int, step: int, margin: int = 0) -> np.ndarray:
    """Nodes (K, 3) int (z, y, x) whose subsets ``p ± half`` lie ``margin`` voxels inside the volume."""
    axes = []
    for n in shape:
        lo, hi = half + margin, n - half - margin - 1
        if hi < lo:
            raise InputError(
                f"the volume ({'x'.join(map(str, shape))}) is too small for subsets of half-width "
                f"{half} and a margin of {margin}",
                "--subset",
            )
        axes.append(np.arange(lo, hi + 1, step))
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)


def _window(a, p, half):
    return a[p[0] - half : p[0] + half, p[1] - half : p[1] + half, p[2] - half : p[2] + half]


def measure(
    f: np.ndarray,
    g: np.ndarray,
    nodes: np.ndarray,
    half: int,
    *,
    engine: str = "local",
    prefilter_sigma: float = 0.0,
    affine: bool = False,
):
    """Displacement (K, 3) from ``f`` to ``g`` at ``nodes`` (voxels, z y x) and a quality per node (K,).

    ``prefilter_sigma``: Gaussian smoothing (voxels) of both volumes first; ``affine``: first-order
    subset shape function in the ``local`` engine (see :func:`refine_translation`).

    Quality: phase-correlation error (``local``) or the final rms grey residual normalised by the
    subset's grey std (``spam``); larger is worse. Returns ``(displacement, quality, seconds)``.

    Parameters
    ----------
    f : ndarray (nz, ny, nx)
        Reference volume (grey values; cast to float32).
    g : ndarray (nz, ny, nx)
        Deformed volume, same shape as ``f``.
    nodes : ndarray of int (K, 3)
        Subset centres ``p`` (voxel indices z, y, x), e.g. from :func:`grid_nodes`; each subset
        ``p ± half`` must lie inside the volume.
    half : int
        Subset half-width (voxels): a subset is the ``(2 half)³`` block ``p − half .. p + half − 1``.
    engine : {"local", "spam"}, default "local"
        Registration engine (see the module docstring); ``spam`` needs the optional package spam.
    prefilter_sigma : float, default 0.0
        Standard deviation (voxels) of the Gaussian applied to both volumes first (0 = none).
    affine : bool, default False
        ``local`` engine only: fit the 12-parameter first-order shape function instead of a pure
        translation (``spam`` always fits a full affine ``Φ``).

    Returns
    -------
    displacement : ndarray (K, 3)
        Displacement from ``f`` to ``g`` (voxels, z y x); NaN rows where a subset is flat or the
        registration failed.
    quality : ndarray (K,)
        Normalised rms residual per node (larger is worse; NaN where it failed).
    seconds : float
        Wall time of the registration.

    Raises
    ------
    InputError
        Unknown ``engine``, or ``spam`` requested but not installed.
    """

    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r} (one of {', '.join(ENGINES)})", "--engine")
    if engine == "spam":
        try:
            import spam.DIC as sdic
        except ImportError:
            raise InputError(
                "the spam engine needs the optional package spam (GPL): pip install spam; or use --engine local",
                "--engine",
            ) from None
    t0 = time.perf_counter()
    f = np.asarray(f, np.float32)
    g = np.asarray(g, np.float32)
    if prefilter_sigma > 0:  # the FBP noise is blue (ramp filter): a light Gaussian keeps the structure
        f = ndimage.gaussian_filter(f, prefilter_sigma)
        g = ndimage.gaussian_filter(g, prefilter_sigma)
    d = np.full((len(nodes), 3), np.nan)
    q = np.full(len(nodes), np.nan)
    for i, p in enumerate(nodes):
        a, b = _window(f, p, half), _window(g, p, half)
        if a.std() == 0 or b.std() == 0:
            continue
        shift, err, _ = phase_cross_correlation(a - a.mean(), b - b.mean(), upsample_factor=1, normalization=None)
        if engine == "local":
            d[i], q[i] = refine_translation(f, g, p, half, -np.asarray(shift, np.float64), affine=affine)
            continue
        m = 3  # spam: im1 is the subset, im2 a larger window (margin for the shift)
        lo = p - half - m
        hi = p + half + m
        if np.any(lo < 0) or np.any(hi > np.array(f.shape)):
            continue
        im1 = f[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        im2 = g[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        phi0 = np.eye(4)
        phi0[:3, 3] = -shift
        r = sdic.register(
            im1, im2, margin=m, PhiInit=phi0, maxIterations=50, deltaPhiMin=1e-4, verbose=False, interpolationOrder=1
        )
        if r.get("returnStatus", 0) < -1:
            continue
        d[i] = np.asarray(r["Phi"])[:3, 3]
        q[i] = float(r.get("error", np.nan)) / max(float(a.std()), 1e-12)
    return d, q, time.perf_counter() - t0


def refine_translation(f, g, p, half: int, d0, n_iter: int = 100, tol: float = 1e-3, affine: bool = False):
    """Gauss–Newton (Lucas–Kanade) translation of the subset ``f[p ± half]`` into ``g``, from ``d0``.

    Minimises the zero-mean sum of squared differences ``Σ ((g(x + d) − ḡ) − (f(x) − f̄))²`` over the
    subset, ``g`` interpolated by cubic B-splines on a block around the subset (margin ``|d| + 4``);
    Gauss–Newton steps with the reference gradient as the Jacobian (the inverse-compositional
    idea of Baker & Matthews, IJCV 56, 2004, with additive updates, valid for small gradients).
    ``affine``: first-order shape function ``x + d + L (x − p)`` (12 parameters, the usual local DVC
    subset; ``d`` is then the displacement at the node itself); otherwise a pure translation (the
    default: on the low-texture subsets of an electrode CT the 12-parameter fit is less robust).
    Returns ``(d, quality)``: quality is the final rms residual over the std of the reference subset
    (NaN if the shift leaves the block; beyond the volume's faces ``g`` is continued by its edge values).
    """
    a = _window(f, p, half).astype(np.float64)
    a = a - a.mean()
    sa = float(a.std())
    d = np.asarray(d0, np.float64).copy()
    m = int(np.ceil(np.abs(d).max())) + 4
    lo = np.asarray(p) - half - m
    hi = np.asarray(p) + half + m
    shape = np.array(g.shape)
    clo, chi = np.maximum(lo, 0), np.minimum(hi, shape)
    block = g[clo[0] : chi[0], clo[1] : chi[1], clo[2] : chi[2]].astype(np.float64)
    if np.any(clo != lo) or np.any(chi != hi):  # near a face: edge values beyond the volume
        block = np.pad(block, [(int(clo[a] - lo[a]), int(hi[a] - chi[a])) for a in range(3)], mode="edge")
    block = ndimage.spline_filter(block, order=3)
    base = np.stack(np.meshgrid(*[np.arange(2 * half, dtype=np.float64) + m] * 3, indexing="ij")).reshape(3, -1)
    # the reference subset's gradient serves as the Jacobian (at convergence ∇g(x + d) = ∇f(x)): one
    # interpolation per iteration
    ga = np.stack([x.ravel() for x in np.gradient(a)], 1)  # (n, 3)
    rel = base - (m + half)  # offsets from the node p (the subset's voxel half, half, half)
    if affine:  # first-order shape function: x -> x + d + L (x - p)
        J = np.concatenate([ga] + [ga * rel[j][:, None] for j in range(3)], 1)  # columns d_i, then L_ij (j-major)
    else:
        J = ga
    J = J - J.mean(axis=0)
    H = J.T @ J
    if np.linalg.cond(H) > 1e10:
        return np.full(3, np.nan), np.nan
    Hinv = np.linalg.inv(H)
    L = np.zeros((3, 3))
    res = np.nan
    for _ in range(n_iter):
        if np.abs(d).max() > m - 2:
            return np.full(3, np.nan), np.nan
        b = ndimage.map_coordinates(block, base + d[:, None] + L @ rel, order=3, prefilter=False, mode="nearest")
        r = b - b.mean() - a.ravel()
        step = -Hinv @ (J.T @ r)
        d += step[:3]
        if affine:
            L += step[3:].reshape(3, 3).T  # step[3 + 3 j + i] is L_ij
        res = float(np.sqrt(np.mean(r**2))) / max(sa, 1e-30)
        if np.abs(step[:3]).max() < tol and np.abs(step[3:]).max(initial=0.0) < tol / half:
            break
    return d, res


def true_increment(u_prev: np.ndarray, u_next: np.ndarray, points: np.ndarray, n_iter: int = 8) -> np.ndarray:
    """Truth ``u_t(X) − u_{t−1}(X)`` at points ``p`` of state ``t−1`` (``X + u_{t−1}(X) = p``); NaN in cracks.

    ``X`` is found by the fixed point ``X <- p − u_{t−1}(X)``; fields are interpolated trilinearly
    (edge values beyond the grid).

    Parameters
    ----------
    u_prev : ndarray (nz, ny, nx, 3)
        Displacement ``u_{t−1}`` of state ``t−1`` on the reference grid (voxels, components z y x);
        NaN in cracks.
    u_next : ndarray (nz, ny, nx, 3)
        Displacement ``u_t`` of state ``t`` on the same grid (voxels, z y x); NaN in cracks.
    points : ndarray (K, 3)
        Points ``p`` in state ``t−1`` (voxel coordinates z, y, x), e.g. DVC nodes.
    n_iter : int, default 8
        Fixed-point iterations for ``X``.

    Returns
    -------
    ndarray (K, 3)
        The displacement increment at each point (voxels, z y x); NaN where the interpolation touches
        a crack voxel of either state.
    """
    p = np.asarray(points, np.float64).T
    nan_prev = ~np.all(np.isfinite(u_prev), axis=-1)
    nan_next = ~np.all(np.isfinite(u_next), axis=-1)
    up = np.nan_to_num(u_prev)
    un = np.nan_to_num(u_next)

    def at(field, X):
        return np.stack([ndimage.map_coordinates(field[..., a], X, order=1, mode="nearest") for a in range(3)])

    X = p.copy()
    for _ in range(n_iter):
        X = p - at(up, X)
    out = (at(un, X) - at(up, X)).T
    bad = ndimage.map_coordinates((nan_prev | nan_next).astype(np.float32), X, order=1, mode="nearest") > 0
    out[bad] = np.nan
    return out


def compare(measured: np.ndarray, truth: np.ndarray, quality: np.ndarray, crack_node: np.ndarray) -> dict:
    """RMS error and bias (voxels) of ``measured − truth`` on crack-free nodes, and how failures meet cracks.

    Parameters
    ----------
    measured : ndarray (K, 3)
        Measured displacements (voxels, z y x; NaN rows = failed nodes), as from :func:`measure`.
    truth : ndarray (K, 3)
        True displacements at the same nodes (voxels), as from :func:`true_increment`.
    quality : ndarray (K,)
        Quality per node from :func:`measure` (larger is worse; NaN = failed).
    crack_node : ndarray of bool (K,)
        Whether a node's subset holds a crack (:func:`crack_nodes`); these nodes are left out of the
        clean-node statistics.

    Returns
    -------
    dict
        ``nodes``, ``crack_nodes``, ``failed_nodes``; on clean nodes ``rms_error_vox`` (rms of the
        error's norm), ``rms_error_per_axis_vox``, ``bias_vox`` (mean error, z y x), ``truth_rms_vox``
        and ``quality_median_clean``; with crack nodes also ``quality_median_crack``,
        ``rms_error_crack_vox``, ``crack_share_of_worst_decile`` (share of crack nodes among the 10 %
        worst quality) and ``crack_share_of_nodes``.
    """
    err = measured - truth
    ok = np.all(np.isfinite(err), axis=1)
    clean = ok & ~crack_node
    res = {
        "nodes": int(len(truth)),
        "crack_nodes": int(crack_node.sum()),
        "failed_nodes": int((~np.isfinite(measured).all(axis=1)).sum()),
    }
    if clean.any():
        e = err[clean]
        res.update(
            rms_error_vox=float(np.sqrt(np.mean(np.sum(e**2, axis=1)))),
            rms_error_per_axis_vox=np.sqrt(np.mean(e**2, axis=0)).tolist(),
            bias_vox=e.mean(axis=0).tolist(),
            truth_rms_vox=float(np.sqrt(np.mean(np.sum(truth[clean] ** 2, axis=1)))),
            quality_median_clean=float(np.nanmedian(quality[clean])),
        )
    cq = crack_node & np.isfinite(quality)
    if cq.any():
        res["quality_median_crack"] = float(np.nanmedian(quality[cq]))
        ce = err[crack_node & ok]
        if len(ce):
            res["rms_error_crack_vox"] = float(np.sqrt(np.mean(np.sum(ce**2, axis=1))))
        fin = np.isfinite(quality)
        thr = np.nanpercentile(quality[fin], 90)
        worst = fin & (quality >= thr)
        res["crack_share_of_worst_decile"] = float(crack_node[worst].mean())
        res["crack_share_of_nodes"] = float(crack_node[fin].mean())
    return res


def crack_nodes(crack_prev: np.ndarray, crack_next: np.ndarray, nodes: np.ndarray, half: int) -> np.ndarray:
    """Whether each node's subset holds a crack voxel in either state."""
    c = ((crack_prev > 0) | (crack_next > 0)).astype(np.float32)
    hit = ndimage.uniform_filter(c, size=2 * half, mode="constant") > 0.5 / (2 * half) ** 3
    return hit[tuple(np.asarray(nodes).T)]


__all__ = ["ENGINES", "compare", "crack_nodes", "grid_nodes", "measure", "true_increment"]
