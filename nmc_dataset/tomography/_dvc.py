"""Local digital volume correlation (DVC) of two CT volumes, and its comparison with a known truth.

Engines
-------
``local`` (always available), the usual subset-based local DVC:

1. both volumes are smoothed by a Gaussian of ``prefilter_sigma`` (FBP noise is blue: the ramp filter
   puts most of its power at high frequencies, where the particle edges have little);
2. every node ``p`` of a regular grid gets a whole-voxel start from the FFT cross-correlation of its
   zero-mean subset (``skimage.registration.phase_cross_correlation``, ``normalization=None``);
3. the subset is registered by the inverse-compositional Gauss–Newton algorithm (IC-GN; Baker &
   Matthews, IJCV 56, 2004; for DIC/DVC Pan et al., Exp. Mech. 53, 2013) on the zero-mean normalised
   sum of squared differences (ZNSSD, insensitive to grey offset and contrast changes), with a
   first-order (affine, 12-parameter) shape function ``x -> c + t + A (x − c)`` by default or a pure
   translation, and the deformed volume interpolated by cubic B-splines;
4. the field is checked by the normalised median test of the 26 grid neighbours (Westerweel &
   Scarano, Exp. Fluids 39, 2005; threshold 2, noise level 0.1 voxel); outliers are registered
   again from their neighbours' median, and the nodes that still fail are flagged.

A node is *reliable* when it converged, its ZNCC (zero-mean normalised cross-correlation of the
matched subsets) is at least ``zncc_min``, and it passes the median test; the share of reliable nodes
is the *coverage*. Subsets in a particle interior or in open pore have little texture and correlate
poorly: they are the unreliable nodes, as in real DVC. Each node also gets the predicted standard
deviation of its displacement, ``σ_r √(diag H⁻¹)`` (``σ_r²`` the residual variance, ``H`` the
Gauss–Newton Hessian: the noise-limited uncertainty of least squares).

``spam`` (optional, GPL: ``pip install spam``): the same nodes and subsets registered by
``spam.DIC.register`` (Lucas–Kanade / Gauss–Newton on a full affine ``Φ``, Tudisco et al.,
Meas. Sci. Technol. 2017), initialised by the phase correlation's integer shift; the node's
displacement is ``Φ``'s translation at the subset centre. The same median test and ZNCC flag
its nodes.

Subsets are the ``(2 half)³`` blocks ``p − half .. p + half − 1``, centred at ``c = p − ½``: the
displacement of a node is the displacement at ``c``.

Truth
-----
The displacement from state ``t−1`` to ``t`` at a point ``c`` of state ``t−1`` is
``u_t(X) − u_{t−1}(X)`` with ``X + u_{t−1}(X) = c`` (``u`` from the reference grid, solved by fixed
point, trilinear interpolation): the *point truth*. A subset measures a weighted average of the field
over its volume, where its texture is, so :func:`subset_truth` also gives the *subset truth*: the
least-squares fit of the shape function to the true field with the subset's own image gradients as
weights, ``min_q Σ_x (∇f(x)·(w(x; q) − u(x)))²`` (the linearised DVC problem of a noise-free pair).
``measured − subset truth`` is the engine's error (noise, interpolation, convergence);
``subset truth − point truth`` is what no subset of that size and shape can resolve (the field's
variation inside a subset where the texture is off-centre). Nodes whose subset holds a crack voxel
in either state, or whose truth is NaN, are the *crack nodes*.
"""

from __future__ import annotations

import time

import numpy as np
from scipy import ndimage, stats
from skimage.registration import phase_cross_correlation

from nmc_dataset.errors import InputError

ENGINES = ("local", "spam")
SHAPES = ("affine", "translation")


def grid_nodes(shape, half: int, step: int, margin: int = 0) -> np.ndarray:
    """Nodes (K, 3) int (z, y, x) on a regular grid whose subsets ``p ± half`` lie ``margin`` voxels inside.

    Parameters
    ----------
    shape : tuple of int
        Volume shape (nz, ny, nx).
    half : int
        Subset half-width (voxels).
    step : int
        Node spacing (voxels).
    margin : int, default 0
        Least distance (voxels) from a subset to the volume's faces.

    Returns
    -------
    ndarray of int (K, 3)
        The nodes, in C order of the grid (z slowest).

    Raises
    ------
    InputError
        If the volume is too small for one subset.
    """
    axes = []
    for n in shape:
        lo, hi = half + margin, n - half - margin - 1
        if hi < lo:
            raise InputError(
                f"the volume ({'x'.join(map(str, shape))}) is too small for subsets of half-width "
                f"{half} and a margin of {margin}: pass a smaller --subset (e.g. 16)",
                "--subset",
            )
        axes.append(np.arange(lo, hi + 1, step))
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)


def _window(a, p, half):
    return a[p[0] - half : p[0] + half, p[1] - half : p[1] + half, p[2] - half : p[2] + half]


def _offsets(half: int) -> np.ndarray:
    """Voxel offsets (3, n) of a ``(2 half)³`` subset from its centre ``p − ½``."""
    r1 = np.arange(2 * half, dtype=np.float64) - (half - 0.5)
    return np.stack(np.meshgrid(r1, r1, r1, indexing="ij")).reshape(3, -1)


def _shape_jacobian(grad: np.ndarray, rel: np.ndarray, affine: bool) -> np.ndarray:
    """Steepest-descent images (n, 3 or 12): ``∇f · ∂w/∂q`` for the translation, then ``A_ij`` (i-major)."""
    if not affine:
        return grad
    return np.concatenate([grad] + [grad[:, [i]] * rel[j][:, None] for i in range(3) for j in range(3)], 1)


def icgn(
    f: np.ndarray,
    g_coeffs: np.ndarray,
    p,
    half: int,
    d0,
    *,
    affine: bool = True,
    n_iter: int = 50,
    tol: float = 1e-3,
):
    """IC-GN registration of the subset ``f[p ± half]`` into ``g`` on the ZNSSD criterion, from ``d0``.

    The warp is ``w(x) = c + t + A (x − c)`` about the subset centre ``c = p − ½`` (``A = I`` for a
    translation). Each iteration samples ``g`` at ``w(x)``, forms the ZNSSD residual
    ``r = (f − f̄) − (‖f − f̄‖ / ‖g − ḡ‖)(g − ḡ)``, solves ``H Δq = −Jᵀ r`` with the constant
    Jacobian ``J`` of the reference subset (its gradient times ``∂w/∂q``, made zero-mean) and
    updates the warp by composition with the inverse increment, ``W ← W ∘ W(Δq)⁻¹``. It stops when
    the increment's translation and its strain times ``half`` are below ``tol`` voxel.

    Parameters
    ----------
    f : ndarray (nz, ny, nx)
        Reference volume (already prefiltered).
    g_coeffs : ndarray (nz, ny, nx) float64
        Cubic B-spline coefficients of the deformed volume (``scipy.ndimage.spline_filter(g, 3)``).
    p : array of int (3,)
        Node (z, y, x); the subset ``p − half .. p + half − 1`` and a 1-voxel rim must lie in ``f``.
    half : int
        Subset half-width (voxels).
    d0 : array (3,)
        Start displacement (voxels).
    affine : bool, default True
        First-order shape function (12 parameters); False: translation only.
    n_iter : int, default 50
        Largest number of iterations.
    tol : float, default 1e-3
        Convergence threshold (voxels).

    Returns
    -------
    d : ndarray (3,)
        Displacement at the subset centre (NaN if the subset is flat or the warp ran away).
    zncc : float
        Zero-mean normalised cross-correlation of ``f`` and the warped ``g`` at the end (1 = perfect).
    sigma : float
        Predicted standard deviation of ``|d|`` from the residual and ``H⁻¹`` (voxels).
    iterations : int
        Iterations used.
    residual : float
        RMS of the final ZNSSD residual in the grey units of ``f`` (not normalised by the subset's
        contrast: its noise part is the same for textured and flat subsets).
    """
    p = np.asarray(p, dtype=np.int64)
    sl = tuple(slice(p[a] - half - 1, p[a] + half + 1) for a in range(3))
    blk = np.asarray(f[sl], np.float64)
    fs = blk[1:-1, 1:-1, 1:-1].ravel()
    fz = fs - fs.mean()
    nf = float(np.linalg.norm(fz))
    fail = (np.full(3, np.nan), np.nan, np.nan, 0, np.nan)
    if nf == 0:
        return fail
    grad = np.stack([x[1:-1, 1:-1, 1:-1].ravel() for x in np.gradient(blk)], 1)
    rel = _offsets(half)
    J = _shape_jacobian(grad, rel, affine)
    J = J - J.mean(axis=0)
    H = J.T @ J
    if not np.all(np.isfinite(H)) or np.linalg.cond(H) > 1e12:
        return fail
    Hinv = np.linalg.inv(H)
    W = np.eye(4)
    W[:3, 3] = np.asarray(d0, np.float64)
    c = p.astype(np.float64)[:, None] - 0.5
    r = fz
    gz, ng = fz, nf
    it = 0
    for it in range(1, n_iter + 1):
        X = c + W[:3, :3] @ rel + W[:3, 3:4]
        gs = ndimage.map_coordinates(g_coeffs, X, order=3, prefilter=False, mode="nearest")
        gz = gs - gs.mean()
        ng = float(np.linalg.norm(gz))
        if ng == 0:
            return fail
        r = fz - (nf / ng) * gz
        dq = -Hinv @ (J.T @ r)
        D = np.eye(4)
        D[:3, 3] = dq[:3]
        if affine:
            D[:3, :3] += dq[3:].reshape(3, 3)
        W = W @ np.linalg.inv(D)
        if not np.all(np.isfinite(W)) or np.abs(W[:3, 3]).max() > 2 * half:
            return fail
        if np.abs(dq[:3]).max() < tol and np.abs(dq[3:]).max(initial=0.0) * half < tol:
            break
    zncc = float(fz @ gz) / (nf * ng)
    s2 = float(r @ r) / max(len(r) - J.shape[1], 1)
    sigma = float(np.sqrt(s2 * np.trace(Hinv[:3, :3])))
    return W[:3, 3].copy(), zncc, sigma, it, float(np.sqrt(np.mean(r**2)))


def median_outliers(d: np.ndarray, grid_shape, eps: float = 0.1, threshold: float = 2.0):
    """Normalised median test of a displacement grid against its 26 neighbours.

    For every node, ``r = |d − median(d_nb)| / (median(|d_nb − median(d_nb)|) + eps)`` per component
    (Westerweel & Scarano, Exp. Fluids 39, 2005); a node is an outlier when its largest ``r``
    exceeds ``threshold`` or it is NaN. The test runs on the field minus its least-squares affine
    trend over the grid: on the grid's faces the neighbours are one-sided, and a large uniform
    strain would otherwise flag every face node.

    Parameters
    ----------
    d : ndarray (K, 3)
        Displacements of the nodes, in C order of ``grid_shape`` (NaN = failed).
    grid_shape : tuple of int
        Nodes per axis, ``prod(grid_shape) == K``.
    eps : float, default 0.1
        Noise level of the displacement (voxels): keeps the test from flagging a uniform field.
    threshold : float, default 2.0
        Outlier threshold on the normalised residual.

    Returns
    -------
    outlier : ndarray of bool (K,)
        Failed nodes and median-test outliers.
    median : ndarray (K, 3)
        The trend plus the median of the finite neighbours' residuals (NaN where none): the
        neighbours' estimate of the node, the start of a second registration.
    """
    d = np.asarray(d, np.float64)
    idx = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in grid_shape], indexing="ij"), -1)
    M = np.concatenate([np.ones((len(d), 1)), idx.reshape(-1, 3)], 1)
    fin = np.all(np.isfinite(d), axis=1)
    trend = np.zeros_like(d)
    if fin.sum() >= 8:  # a robust affine trend: least squares, then again without the worst 10 %
        coef = np.linalg.lstsq(M[fin], d[fin], rcond=None)[0]
        res0 = np.linalg.norm(d - M @ coef, axis=1)
        keep = fin & (res0 <= np.nanpercentile(res0[fin], 90))
        if keep.sum() >= 8:
            coef = np.linalg.lstsq(M[keep], d[keep], rcond=None)[0]
        trend = M @ coef
    grid = (d - trend).reshape(tuple(grid_shape) + (3,))
    pad = np.pad(grid, [(1, 1)] * 3 + [(0, 0)], constant_values=np.nan)
    nz, ny, nx = grid_shape
    nb = np.stack(
        [
            pad[1 + i : 1 + i + nz, 1 + j : 1 + j + ny, 1 + k : 1 + k + nx]
            for i in (-1, 0, 1)
            for j in (-1, 0, 1)
            for k in (-1, 0, 1)
            if (i, j, k) != (0, 0, 0)
        ]
    )
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(nb, axis=0)
            res = np.nanmedian(np.abs(nb - med[None]), axis=0)
        r = np.abs(grid - med) / (res + eps)
    out = ~np.all(np.isfinite(grid), axis=-1) | np.any(~(r <= threshold), axis=-1)
    return out.reshape(-1), med.reshape(-1, 3) + trend


def _grid_shape(nodes: np.ndarray):
    """Nodes per axis when ``nodes`` is a full regular grid in C order, else None."""
    axes = [np.unique(nodes[:, a]) for a in range(3)]
    shape = tuple(len(x) for x in axes)
    if int(np.prod(shape)) != len(nodes):
        return None
    full = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    return shape if np.array_equal(full, nodes) else None


def correlate(
    f: np.ndarray,
    g: np.ndarray,
    nodes: np.ndarray,
    half: int,
    *,
    engine: str = "local",
    prefilter_sigma: float = 1.0,
    shape: str = "affine",
    zncc_min: float = 0.9,
    median_threshold: float = 2.0,
) -> dict:
    """Local DVC from ``f`` to ``g`` at ``nodes``: displacement, quality and reliability per node.

    See the module docstring for the method.

    Parameters
    ----------
    f : ndarray (nz, ny, nx)
        Reference volume (grey values; cast to float32).
    g : ndarray (nz, ny, nx)
        Deformed volume, same shape as ``f``.
    nodes : ndarray of int (K, 3)
        Subset nodes ``p`` (z, y, x), e.g. from :func:`grid_nodes`; each subset ``p ± half`` and a
        1-voxel rim must lie inside the volume.
    half : int
        Subset half-width (voxels): a subset is the ``(2 half)³`` block ``p − half .. p + half − 1``.
    engine : {"local", "spam"}, default "local"
        Registration engine; ``spam`` needs the optional package spam.
    prefilter_sigma : float, default 1.0
        Standard deviation (voxels) of the Gaussian applied to both volumes first (0 = none).
    shape : {"affine", "translation"}, default "affine"
        Subset shape function of the ``local`` engine (``spam`` always fits a full affine ``Φ``).
    zncc_min : float, default 0.9
        Least ZNCC of a reliable node.
    median_threshold : float, default 2.0
        Threshold of the normalised median test (``inf`` = no test, nothing re-registered).

    Returns
    -------
    dict
        ``displacement`` (K, 3) at the subset centres ``p − ½`` (voxels, z y x; NaN = failed),
        ``zncc`` (K,), ``residual`` (K,) RMS grey residual of the matched subsets, ``quality`` (K,)
        the residual over its median over the nodes (larger is worse: the noise part of the
        residual is the same in every subset, textured or not, while material that appears or
        vanishes, such as a crack, raises it), ``sigma`` (K,) predicted standard deviation
        (``local``; NaN for ``spam``), ``reliable`` (K,) bool, ``median_outlier``
        (K,) bool (after the second pass), ``iterations`` (K,), ``seconds`` (wall time).

    Raises
    ------
    InputError
        Unknown ``engine`` or ``shape``, or ``spam`` requested but not installed.
    """
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r} (one of {', '.join(ENGINES)})", "--engine")
    if shape not in SHAPES:
        raise InputError(f"unknown shape function {shape!r} (one of {', '.join(SHAPES)})", "--shape")
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
    nodes = np.asarray(nodes, np.int64).reshape(-1, 3)
    if f.shape != g.shape:
        raise InputError(f"the volumes differ in shape: {f.shape} vs {g.shape}")
    if len(nodes) and (np.any(nodes - half - 1 < 0) or np.any(nodes + half + 1 > np.array(f.shape))):
        raise InputError(f"a subset of half-width {half} and its 1-voxel rim leave the volume", "--margin")
    if prefilter_sigma > 0:  # the FBP noise is blue (ramp filter): a light Gaussian keeps the structure
        f = ndimage.gaussian_filter(f, prefilter_sigma)
        g = ndimage.gaussian_filter(g, prefilter_sigma)
    K = len(nodes)
    d = np.full((K, 3), np.nan)
    zncc = np.full(K, np.nan)
    sig = np.full(K, np.nan)
    its = np.zeros(K, np.int64)
    resid = np.full(K, np.nan)
    coeffs = ndimage.spline_filter(g.astype(np.float64), order=3) if engine == "local" else None
    affine = shape == "affine"

    def one(i, d0):
        p = nodes[i]
        if engine == "local":
            d[i], zncc[i], sig[i], its[i], resid[i] = icgn(f, coeffs, p, half, d0, affine=affine)
            return
        m = int(np.ceil(np.abs(d0).max())) + 3  # spam: im1 is the subset, im2 a larger window (margin for the shift)
        lo, hi = p - half - m, p + half + m
        if np.any(lo < 0) or np.any(hi > np.array(f.shape)):
            return
        im1 = f[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        im2 = g[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        phi0 = np.eye(4)
        phi0[:3, 3] = d0
        r = sdic.register(
            im1, im2, margin=m, PhiInit=phi0, maxIterations=50, deltaPhiMin=1e-4, verbose=False, interpolationOrder=1
        )
        if r.get("returnStatus", 0) < -1:
            return
        d[i] = np.asarray(r["Phi"])[:3, 3]
        its[i] = int(r.get("iterations", 0))
        # ZNCC of the subset and the deformed volume warped by Φ (spam's own error is an SSD)
        a = _window(f, p, half).astype(np.float64).ravel()
        A = np.asarray(r["Phi"])[:3, :3]
        X = (p.astype(np.float64) - 0.5)[:, None] + A @ _offsets(half) + d[i][:, None]
        b = ndimage.map_coordinates(g, X, order=1, mode="nearest").astype(np.float64)
        a, b = a - a.mean(), b - b.mean()
        zncc[i] = float(a @ b) / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-30)
        resid[i] = float(np.sqrt(np.mean((a - b * (np.linalg.norm(a) / max(np.linalg.norm(b), 1e-30))) ** 2)))

    for i, p in enumerate(nodes):
        a, b = _window(f, p, half), _window(g, p, half)
        if a.std() == 0 or b.std() == 0:
            continue
        shift, _, _ = phase_cross_correlation(a - a.mean(), b - b.mean(), upsample_factor=1, normalization=None)
        one(i, -np.asarray(shift, np.float64))
    gshape = _grid_shape(np.asarray(nodes))
    outlier = ~np.all(np.isfinite(d), axis=1)
    if gshape is not None and np.isfinite(median_threshold):
        outlier, med = median_outliers(d, gshape, threshold=median_threshold)
        for i in np.flatnonzero(outlier & np.all(np.isfinite(med), axis=1)):  # second pass from the neighbours
            one(i, med[i])
        outlier, _ = median_outliers(d, gshape, threshold=median_threshold)
    reliable = np.isfinite(zncc) & (zncc >= zncc_min) & ~outlier & np.all(np.isfinite(d), axis=1)
    return {
        "displacement": d,
        "zncc": zncc,
        "quality": resid / np.nanmedian(resid) if np.isfinite(resid).any() else resid,
        "sigma": sig,
        "residual": resid,
        "reliable": reliable,
        "median_outlier": outlier,
        "iterations": its,
        "seconds": time.perf_counter() - t0,
    }


def measure(
    f: np.ndarray,
    g: np.ndarray,
    nodes: np.ndarray,
    half: int,
    *,
    engine: str = "local",
    prefilter_sigma: float = 1.0,
    affine: bool = True,
):
    """Displacement (K, 3) from ``f`` to ``g`` at ``nodes`` and a quality per node: :func:`correlate` in short.

    Parameters
    ----------
    f : ndarray (nz, ny, nx)
        Reference volume.
    g : ndarray (nz, ny, nx)
        Deformed volume, same shape as ``f``.
    nodes : ndarray of int (K, 3)
        Subset nodes (z, y, x).
    half : int
        Subset half-width (voxels).
    engine : {"local", "spam"}, default "local"
        Registration engine.
    prefilter_sigma : float, default 1.0
        Gaussian prefilter (voxels; 0 = none).
    affine : bool, default True
        First-order shape function of the ``local`` engine (False: translation).

    Returns
    -------
    displacement : ndarray (K, 3)
        At the subset centres ``p − ½`` (voxels, z y x; NaN = failed).
    quality : ndarray (K,)
        Residual over its median over the nodes (larger is worse; NaN = failed).
    seconds : float
        Wall time.
    """
    r = correlate(
        f,
        g,
        nodes,
        half,
        engine=engine,
        prefilter_sigma=prefilter_sigma,
        shape="affine" if affine else "translation",
    )
    return r["displacement"], r["quality"], r["seconds"]


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
        Points ``p`` in state ``t−1`` (voxel coordinates z, y, x), e.g. subset centres.
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
    if np.any(up):
        for _ in range(n_iter):
            X = p - at(up, X)
    out = (at(un, X) - at(up, X)).T
    bad = ndimage.map_coordinates((nan_prev | nan_next).astype(np.float32), X, order=1, mode="nearest") > 0
    out[bad] = np.nan
    return out


def subset_truth(
    f: np.ndarray,
    increment: np.ndarray,
    nodes: np.ndarray,
    half: int,
    *,
    prefilter_sigma: float = 1.0,
    shape: str = "affine",
) -> np.ndarray:
    """The subset truth: the gradient-weighted least-squares fit of the shape function to the true field.

    ``q* = argmin_q Σ_x (∇f(x) · (w(x; q) − x − u(x)))²`` over the subset (zero-mean, as the ZNSSD),
    with ``∇f`` the gradient of the prefiltered reference: what a perfect local DVC of a noise-free
    pair finds to first order. Returns the translation of ``q*`` (the displacement at the subset
    centre ``p − ½``).

    Parameters
    ----------
    f : ndarray (nz, ny, nx)
        Reference volume (state ``t−1``).
    increment : ndarray (nz, ny, nx, 3)
        True displacement from ``t−1`` to ``t`` at every voxel of state ``t−1`` (voxels, z y x; NaN in
        cracks), e.g. :func:`true_increment` at all voxel centres.
    nodes : ndarray of int (K, 3)
        Subset nodes.
    half : int
        Subset half-width.
    prefilter_sigma : float, default 1.0
        The Gaussian prefilter of the DVC (voxels).
    shape : {"affine", "translation"}, default "affine"
        Shape function.

    Returns
    -------
    ndarray (K, 3)
        Subset truth per node (voxels; NaN where the subset holds a NaN or has no texture).
    """
    fp = np.asarray(f, np.float32)
    if prefilter_sigma > 0:
        fp = ndimage.gaussian_filter(fp, prefilter_sigma)
    rel = _offsets(half)
    out = np.full((len(nodes), 3), np.nan)
    for i, p in enumerate(np.asarray(nodes)):
        sl = tuple(slice(p[a] - half - 1, p[a] + half + 1) for a in range(3))
        blk = fp[sl].astype(np.float64)
        grad = np.stack([x[1:-1, 1:-1, 1:-1].ravel() for x in np.gradient(blk)], 1)
        U = _window(increment, p, half).reshape(-1, 3).astype(np.float64)
        if not np.all(np.isfinite(U)):
            continue
        J = _shape_jacobian(grad, rel, shape == "affine")
        y = np.sum(grad * U, axis=1)
        J = J - J.mean(axis=0)
        y = y - y.mean()
        H = J.T @ J
        if not np.all(np.isfinite(H)) or np.linalg.cond(H) > 1e12:
            continue
        out[i] = np.linalg.solve(H, J.T @ y)[:3]
    return out


def warp(f: np.ndarray, u: np.ndarray, n_iter: int = 8) -> np.ndarray:
    """The volume ``g`` whose content is ``f`` moved by ``u``: ``g(y) = f(X)`` with ``X + u(X) = y``.

    ``X`` is found by the fixed point ``X <- y − u(X)`` (``u`` interpolated trilinearly); ``f`` is
    sampled at ``X`` by cubic B-splines (edge values beyond the volume). A pair ``(f, warp(f, u))``
    obeys brightness constancy exactly: the pure DVC problem, without the renderer in between.

    Parameters
    ----------
    f : ndarray (nz, ny, nx)
        Reference volume.
    u : ndarray (nz, ny, nx, 3)
        Displacement on the reference grid (voxels, z y x), finite.
    n_iter : int, default 8
        Fixed-point iterations (each contracts the error by ``|∇u|``).

    Returns
    -------
    ndarray (nz, ny, nx) float32
        The deformed volume.
    """
    y = np.indices(f.shape, dtype=np.float64)
    X = y.copy()
    for _ in range(n_iter):
        X = y - np.stack([ndimage.map_coordinates(u[..., a], X, order=1, mode="nearest") for a in range(3)])
    return ndimage.map_coordinates(np.asarray(f, np.float64), X, order=3, mode="nearest").astype(np.float32)


def _rms(e: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.sum(e**2, axis=1)))) if len(e) else float("nan")


def compare(
    measured: np.ndarray,
    truth: np.ndarray,
    quality: np.ndarray,
    crack_node: np.ndarray,
    *,
    reliable: np.ndarray | None = None,
    subset: np.ndarray | None = None,
    crack_fraction: np.ndarray | None = None,
) -> dict:
    """RMS error and bias (voxels) of ``measured − truth`` on crack-free nodes, and how failures meet cracks.

    Parameters
    ----------
    measured : ndarray (K, 3)
        Measured displacements (voxels, z y x; NaN rows = failed nodes), as from :func:`correlate`.
    truth : ndarray (K, 3)
        Point truth at the same points (voxels), as from :func:`true_increment`.
    quality : ndarray (K,)
        Quality per node (larger is worse; NaN = failed).
    crack_node : ndarray of bool (K,)
        Whether a node's subset holds a crack (:func:`crack_nodes`); these nodes are left out of the
        clean-node statistics.
    reliable : ndarray of bool (K,), optional
        Reliable nodes (:func:`correlate`); adds the coverage and the errors on reliable nodes.
    subset : ndarray (K, 3), optional
        Subset truth (:func:`subset_truth`); adds the engine error and the resolution term.
    crack_fraction : ndarray (K,), optional
        Share of each subset's voxels that cracked between the states (:func:`new_crack_fraction`);
        adds ``quality_vs_new_crack_spearman``, the rank correlation of quality and that share.

    Returns
    -------
    dict
        ``nodes``, ``crack_nodes``, ``failed_nodes``; on clean nodes ``rms_error_vox`` (rms of the
        error's norm), ``median_error_vox``, ``rms_error_per_axis_vox``, ``bias_vox`` (mean error,
        z y x), ``truth_rms_vox`` and ``quality_median_clean``; with ``reliable`` also ``coverage``
        (reliable share of the clean nodes), ``rms_error_reliable_vox``, ``median_error_reliable_vox``,
        ``bias_reliable_vox``; with ``subset`` also ``rms_error_vs_subset_truth_vox`` (all converged
        clean nodes), ``rms_error_vs_subset_truth_reliable_vox`` and ``subset_truth_vs_point_rms_vox``;
        with crack nodes also ``quality_median_crack``, ``rms_error_crack_vox``,
        ``crack_share_of_worst_decile`` (share of crack nodes among the 10 % worst quality),
        ``crack_share_of_nodes``, and with ``reliable`` ``crack_share_of_unreliable``; with
        ``crack_fraction`` (and some node cracked) ``quality_vs_new_crack_spearman``.
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
            rms_error_vox=_rms(e),
            median_error_vox=float(np.median(np.linalg.norm(e, axis=1))),
            rms_error_per_axis_vox=np.sqrt(np.mean(e**2, axis=0)).tolist(),
            bias_vox=e.mean(axis=0).tolist(),
            truth_rms_vox=_rms(truth[clean]),
            quality_median_clean=float(np.nanmedian(quality[clean])),
        )
    if reliable is not None:
        n_clean = int((~crack_node & np.all(np.isfinite(truth), axis=1)).sum())
        rc = clean & reliable
        res["coverage"] = float(rc.sum() / n_clean) if n_clean else float("nan")
        if rc.any():
            res.update(
                rms_error_reliable_vox=_rms(err[rc]),
                median_error_reliable_vox=float(np.median(np.linalg.norm(err[rc], axis=1))),
                bias_reliable_vox=err[rc].mean(axis=0).tolist(),
            )
    if subset is not None:
        es = measured - subset
        cs = clean & np.all(np.isfinite(es), axis=1)
        if cs.any():
            res["rms_error_vs_subset_truth_vox"] = _rms(es[cs])
            res["subset_truth_vs_point_rms_vox"] = _rms((subset - truth)[cs])
            if reliable is not None and (cs & reliable).any():
                res["rms_error_vs_subset_truth_reliable_vox"] = _rms(es[cs & reliable])
    cq = crack_node & np.isfinite(quality)
    if cq.any():
        res["quality_median_crack"] = float(np.nanmedian(quality[cq]))
        ce = err[crack_node & ok]
        if len(ce):
            res["rms_error_crack_vox"] = _rms(ce)
        fin = np.isfinite(quality)
        thr = np.nanpercentile(quality[fin], 90)
        worst = fin & (quality >= thr)
        res["crack_share_of_worst_decile"] = float(crack_node[worst].mean())
        res["crack_share_of_nodes"] = float(crack_node[fin].mean())
        if reliable is not None and (~reliable).any():
            res["crack_share_of_unreliable"] = float(crack_node[~reliable].mean())
    if crack_fraction is not None:
        fin = np.isfinite(quality)
        cf = np.asarray(crack_fraction, np.float64)
        if fin.sum() > 2 and np.ptp(cf[fin]) > 0:
            res["quality_vs_new_crack_spearman"] = float(stats.spearmanr(quality[fin], cf[fin])[0])
    return res


def crack_nodes(crack_prev: np.ndarray, crack_next: np.ndarray, nodes: np.ndarray, half: int) -> np.ndarray:
    """Whether each node's subset holds a crack voxel in either state.

    Parameters
    ----------
    crack_prev, crack_next : ndarray (nz, ny, nx)
        Crack labels (0 = none) of the two states.
    nodes : ndarray of int (K, 3)
        Subset nodes.
    half : int
        Subset half-width.

    Returns
    -------
    ndarray of bool (K,)
    """
    c = ((crack_prev > 0) | (crack_next > 0)).astype(np.float32)
    hit = ndimage.uniform_filter(c, size=2 * half, mode="constant") > 0.5 / (2 * half) ** 3
    return hit[tuple(np.asarray(nodes).T)]


def new_crack_fraction(crack_prev: np.ndarray, crack_next: np.ndarray, nodes: np.ndarray, half: int) -> np.ndarray:
    """Share of each node's subset that is crack in state ``t`` and not in ``t−1``: material that vanished.

    Parameters
    ----------
    crack_prev, crack_next : ndarray (nz, ny, nx)
        Crack labels (0 = none) of the two states.
    nodes : ndarray of int (K, 3)
        Subset nodes.
    half : int
        Subset half-width.

    Returns
    -------
    ndarray (K,)
        In [0, 1].
    """
    new = ((crack_next > 0) & ~(crack_prev > 0)).astype(np.float32)
    return ndimage.uniform_filter(new, size=2 * half, mode="constant")[tuple(np.asarray(nodes).T)].astype(np.float64)


__all__ = [
    "ENGINES",
    "SHAPES",
    "compare",
    "correlate",
    "crack_nodes",
    "grid_nodes",
    "icgn",
    "measure",
    "median_outliers",
    "new_crack_fraction",
    "subset_truth",
    "true_increment",
    "warp",
]
