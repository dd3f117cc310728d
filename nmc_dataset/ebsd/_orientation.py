"""Crystal orientations: Bunge Euler angles, unit quaternions, point-group symmetry, misorientation.

Conventions
-----------
* An orientation is the *passive* rotation ``g`` taking sample coordinates to crystal
  coordinates (Bunge): ``g = Z(φ2) X(Φ) Z(φ1)`` with ``Z(θ) = [[c, s, 0], [-s, c, 0], [0, 0, 1]]``
  and ``X(θ) = [[1, 0, 0], [0, c, s], [0, -s, c]]``. Euler angles are in radians here
  (readers convert from degrees).
* A unit quaternion ``q = (w, x, y, z)`` stands for the matrix
  ``R(q) = [[1-2(y²+z²), 2(xy-wz), 2(xz+wy)], ...]`` (the usual active formula) and
  ``R(p ⊗ q) = R(p) R(q)`` for the Hamilton product; the orientation's quaternion is the one
  with ``R(q) = g``. ``q`` and ``-q`` are the same rotation.
* Crystal symmetry acts on the crystal side: ``g`` and ``S g`` (``S`` a proper rotation of the
  point group) describe the same crystal. The misorientation angle of ``g_A``, ``g_B`` is
  ``min_S angle(S g_B g_A^-1)`` (one minimum over the group suffices: the angle is invariant
  under conjugation, so ``min_{i,j} angle(S_i Δ S_j^-1) = min_S angle(S Δ)``).
* Crystal frame of hexagonal/trigonal groups: ``x ∥ a1``, ``z ∥ c``; the 2-fold axes of
  ``-3m`` (proper part 32, setting -3m1 as in R-3m) lie along a1, a2, a3 (0°, 60°, 120° from x
  in the basal plane), those of ``6/mmm`` every 30°. Monoclinic ``2/m``: 2-fold along y.

No dependency on orix (GPL): everything here is numpy.
"""

from __future__ import annotations

import functools

import numpy as np

# --------------------------------------------------------------------------- quaternion algebra


def qmul(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Hamilton product ``p ⊗ q`` (broadcasting over leading axes; last axis = (w, x, y, z))."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    pw, px, py, pz = np.moveaxis(p, -1, 0)
    qw, qx, qy, qz = np.moveaxis(q, -1, 0)
    return np.stack([
        pw * qw - px * qx - py * qy - pz * qz,
        pw * qx + px * qw + py * qz - pz * qy,
        pw * qy - px * qz + py * qw + pz * qx,
        pw * qz + px * qy - py * qx + pz * qw,
    ], axis=-1)


def qconj(q: np.ndarray) -> np.ndarray:
    """Conjugate (= inverse of a unit quaternion)."""
    q = np.asarray(q, dtype=np.float64)
    return q * np.array([1.0, -1.0, -1.0, -1.0])


def qnormalize(q: np.ndarray) -> np.ndarray:
    """Unit quaternions with ``w >= 0`` (the canonical sign)."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[..., :1] < 0, -q, q)


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrices ``R(q)`` (..., 3, 3)."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def matrix_to_quat(m: np.ndarray) -> np.ndarray:
    """Unit quaternions (``w >= 0``) of rotation matrices (..., 3, 3) (Shepperd's method)."""
    m = np.asarray(m, dtype=np.float64)
    shape = m.shape[:-2]
    m = m.reshape(-1, 3, 3)
    tr = np.trace(m, axis1=1, axis2=2)
    cand = np.stack([tr, m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]], axis=1)
    k = np.argmax(cand, axis=1)
    q = np.empty((len(m), 4))
    for case in range(4):
        s = k == case
        if not s.any():
            continue
        a = m[s]
        if case == 0:
            r = np.sqrt(1.0 + tr[s]) * 2
            q[s] = np.stack([0.25 * r, (a[:, 2, 1] - a[:, 1, 2]) / r, (a[:, 0, 2] - a[:, 2, 0]) / r,
                             (a[:, 1, 0] - a[:, 0, 1]) / r], 1)
        elif case == 1:
            r = np.sqrt(np.maximum(1.0 + a[:, 0, 0] - a[:, 1, 1] - a[:, 2, 2], 0)) * 2
            q[s] = np.stack([(a[:, 2, 1] - a[:, 1, 2]) / r, 0.25 * r, (a[:, 0, 1] + a[:, 1, 0]) / r,
                             (a[:, 0, 2] + a[:, 2, 0]) / r], 1)
        elif case == 2:
            r = np.sqrt(np.maximum(1.0 + a[:, 1, 1] - a[:, 0, 0] - a[:, 2, 2], 0)) * 2
            q[s] = np.stack([(a[:, 0, 2] - a[:, 2, 0]) / r, (a[:, 0, 1] + a[:, 1, 0]) / r, 0.25 * r,
                             (a[:, 1, 2] + a[:, 2, 1]) / r], 1)
        else:
            r = np.sqrt(np.maximum(1.0 + a[:, 2, 2] - a[:, 0, 0] - a[:, 1, 1], 0)) * 2
            q[s] = np.stack([(a[:, 1, 0] - a[:, 0, 1]) / r, (a[:, 0, 2] + a[:, 2, 0]) / r,
                             (a[:, 1, 2] + a[:, 2, 1]) / r, 0.25 * r], 1)
    return qnormalize(q).reshape(shape + (4,))


def axis_angle_to_quat(axis, angle) -> np.ndarray:
    """Quaternion of the (active) rotation by ``angle`` (radians) about ``axis``."""
    axis = np.asarray(axis, dtype=np.float64)
    axis = axis / np.linalg.norm(axis, axis=-1, keepdims=True)
    half = 0.5 * np.asarray(angle, dtype=np.float64)
    return np.concatenate([np.cos(half)[..., None], np.sin(half)[..., None] * axis], axis=-1)


def rotvec_to_quat(v: np.ndarray) -> np.ndarray:
    """Quaternions of rotation vectors (axis × angle in radians), shape (..., 3)."""
    v = np.asarray(v, dtype=np.float64)
    ang = np.linalg.norm(v, axis=-1)
    half = 0.5 * ang
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where(ang > 1e-12, np.sin(half) / np.where(ang > 1e-12, ang, 1.0), 0.5)
    return np.concatenate([np.cos(half)[..., None], scale[..., None] * v], axis=-1)


# --------------------------------------------------------------------------- Euler angles
def euler_to_quat(euler: np.ndarray) -> np.ndarray:
    """Bunge Euler angles ``(φ1, Φ, φ2)`` in radians (..., 3) → unit quaternions (..., 4), w >= 0.

    Parameters
    ----------
    euler : (..., 3) float array
        Bunge Euler angles ``(φ1, Φ, φ2)`` in radians.

    Returns
    -------
    (..., 4) float array
        Unit quaternions ``(w, x, y, z)``, ``w >= 0``.
    """
    e = np.asarray(euler, dtype=np.float64)
    p1, P, p2 = e[..., 0], e[..., 1], e[..., 2]
    # g = Z(φ2) X(Φ) Z(φ1) with passive factors: Z_passive(θ) = R_active(-θ about z)
    z = np.zeros_like(p1)
    qz1 = np.stack([np.cos(-p1 / 2), z, z, np.sin(-p1 / 2)], -1)
    qx = np.stack([np.cos(-P / 2), np.sin(-P / 2), z, z], -1)
    qz2 = np.stack([np.cos(-p2 / 2), z, z, np.sin(-p2 / 2)], -1)
    return qnormalize(qmul(qmul(qz2, qx), qz1))


def euler_to_matrix(euler: np.ndarray) -> np.ndarray:
    """Bunge orientation matrices ``g`` (..., 3, 3) from ``(φ1, Φ, φ2)`` in radians (plain formula)."""
    e = np.asarray(euler, dtype=np.float64)
    c1, s1 = np.cos(e[..., 0]), np.sin(e[..., 0])
    c, s = np.cos(e[..., 1]), np.sin(e[..., 1])
    c2, s2 = np.cos(e[..., 2]), np.sin(e[..., 2])
    return np.stack([
        np.stack([c1 * c2 - s1 * s2 * c, s1 * c2 + c1 * s2 * c, s2 * s], -1),
        np.stack([-c1 * s2 - s1 * c2 * c, -s1 * s2 + c1 * c2 * c, c2 * s], -1),
        np.stack([s1 * s, -c1 * s, c], -1),
    ], -2)


def quat_to_euler(q: np.ndarray) -> np.ndarray:
    """Unit quaternions → Bunge Euler angles in radians, ``φ1, φ2 ∈ [0, 2π)``, ``Φ ∈ [0, π]``.

    When ``Φ`` is 0 or π only ``φ1 ± φ2`` is defined; ``φ2 = 0`` is returned then.

    Parameters
    ----------
    q : (..., 4) float array
        Unit quaternions ``(w, x, y, z)``.

    Returns
    -------
    (..., 3) float array
        ``(φ1, Φ, φ2)`` in radians.
    """
    g = quat_to_matrix(q)
    cP = np.clip(g[..., 2, 2], -1.0, 1.0)
    P = np.arccos(cP)
    sP = np.sqrt(np.maximum(1.0 - cP * cP, 0.0))
    regular = sP > 1e-7
    p1 = np.where(regular, np.arctan2(g[..., 2, 0], -g[..., 2, 1]), np.arctan2(g[..., 0, 1], g[..., 0, 0]))
    p2 = np.where(regular, np.arctan2(g[..., 0, 2], g[..., 1, 2]), 0.0)
    return np.stack([np.mod(p1, 2 * np.pi), P, np.mod(p2, 2 * np.pi)], -1)


# --------------------------------------------------------------------------- symmetry
_GENERATORS = {
    # proper point group: list of (axis, fold)
    "1": [],
    "2": [((0, 1, 0), 2)],
    "222": [((0, 0, 1), 2), ((1, 0, 0), 2)],
    "4": [((0, 0, 1), 4)],
    "422": [((0, 0, 1), 4), ((1, 0, 0), 2)],
    "3": [((0, 0, 1), 3)],
    "32": [((0, 0, 1), 3), ((1, 0, 0), 2)],
    "6": [((0, 0, 1), 6)],
    "622": [((0, 0, 1), 6), ((1, 0, 0), 2)],
    "23": [((0, 0, 1), 2), ((1, 0, 0), 2), ((1, 1, 1), 3)],
    "432": [((0, 0, 1), 4), ((1, 0, 0), 4), ((1, 1, 1), 3)],
}

#: Accepted names → proper point group (the rotations that matter for orientations).
POINT_GROUP_ALIASES = {
    "1": "1", "-1": "1", "triclinic": "1",
    "2": "2", "2/m": "2", "m": "2", "monoclinic": "2",
    "222": "222", "mmm": "222", "mm2": "222", "orthorhombic": "222",
    "4": "4", "4/m": "4", "-4": "4",
    "422": "422", "4/mmm": "422", "4mm": "422", "-42m": "422", "tetragonal": "422",
    "3": "3", "-3": "3",
    "32": "32", "-3m": "32", "-3m1": "32", "3m": "32", "d3d": "32", "trigonal": "32",
    "6": "6", "6/m": "6", "-6": "6",
    "622": "622", "6/mmm": "622", "6mm": "622", "-6m2": "622", "hexagonal": "622",
    "23": "23", "m-3": "23",
    "432": "432", "m-3m": "432", "-43m": "432", "m3m": "432", "cubic": "432",
}


def proper_group_name(point_group: str) -> str:
    """The proper point group (e.g. ``"32"``) of a name such as ``"-3m"``, ``"m-3m"``, ``"6/mmm"``."""
    key = str(point_group).strip().lower()
    if key not in POINT_GROUP_ALIASES:
        raise ValueError(f"unknown point group {point_group!r}; known: {sorted(set(POINT_GROUP_ALIASES))}")
    return POINT_GROUP_ALIASES[key]


@functools.lru_cache(maxsize=None)
def _symmetry_ops_cached(name: str) -> np.ndarray:
    gens = [axis_angle_to_quat(np.array(ax, float), 2 * np.pi / fold) for ax, fold in _GENERATORS[name]]
    ops = [np.array([1.0, 0, 0, 0])]

    def key(q):  # q and -q are one rotation: make the first non-zero component positive
        q = np.round(q / np.linalg.norm(q), 9) + 0.0
        first = q[np.flatnonzero(np.abs(q) > 1e-9)[0]]
        return tuple(np.round(q * np.sign(first), 9) + 0.0)

    seen = {key(ops[0])}
    frontier = list(ops)
    while frontier:
        new = []
        for a in frontier:
            for gq in gens:
                b = qnormalize(qmul(gq, a))
                k = key(b)
                if k not in seen:
                    seen.add(k)
                    ops.append(b)
                    new.append(b)
        frontier = new
    out = np.array(ops)
    out.setflags(write=False)
    return out


def symmetry_ops(point_group: str) -> np.ndarray:
    """Proper rotations of a crystal point group as unit quaternions (K, 4), identity first.

    Parameters
    ----------
    point_group : str
        Hermann–Mauguin name of the point or Laue group (``"-3m"``, ``"6/mmm"``, ``"m-3m"``,
        ``"32"``, ...); see :data:`POINT_GROUP_ALIASES`.

    Returns
    -------
    (K, 4) array
        K = 1, 2, 4, 4, 8, 3, 6, 6, 12, 12, 24 for 1, 2, 222, 4, 422, 3, 32, 6, 622, 23, 432.
    """
    return _symmetry_ops_cached(proper_group_name(point_group))


# --------------------------------------------------------------------------- misorientation
def rotation_angle(q: np.ndarray) -> np.ndarray:
    """Rotation angle in radians ∈ [0, π] of unit quaternions."""
    w = np.abs(np.asarray(q, dtype=np.float64)[..., 0])
    return 2.0 * np.arccos(np.clip(w, 0.0, 1.0))


def misorientation_angle(qa: np.ndarray, qb: np.ndarray, ops: np.ndarray | str = "1") -> np.ndarray:
    """Symmetry-reduced misorientation angles (radians) between orientation pairs (vectorised).

    Parameters
    ----------
    qa, qb : (..., 4) arrays
        Orientations (unit quaternions), broadcast against each other.
    ops : (K, 4) array or str
        Proper symmetry rotations (:func:`symmetry_ops`) or a point-group name.

    Returns
    -------
    array
        ``min_S angle(S ⊗ q_b ⊗ q_a^-1)`` in [0, π].
    """
    if isinstance(ops, str):
        ops = symmetry_ops(ops)
    d = qmul(qb, qconj(qa))
    # scalar part of S ⊗ d = S_w d_w - S_v · d_v for every operator: one matrix product
    a = np.asarray(ops, dtype=np.float64) * np.array([1.0, -1.0, -1.0, -1.0])
    w = np.abs(d @ a.T).max(axis=-1)
    return 2.0 * np.arccos(np.clip(w, 0.0, 1.0))


def misorientation_angle_bruteforce(qa: np.ndarray, qb: np.ndarray, ops) -> np.ndarray:
    """Slow twin of :func:`misorientation_angle`: min over all operator *pairs*, with matrices."""
    if isinstance(ops, str):
        ops = symmetry_ops(ops)
    ga = quat_to_matrix(np.atleast_2d(qa))
    gb = quat_to_matrix(np.atleast_2d(qb))
    sm = quat_to_matrix(ops)
    best = np.full(np.broadcast_shapes(ga.shape[:-2], gb.shape[:-2]), np.inf)
    for si in sm:
        for sj in sm:
            dm = (si @ gb) @ np.swapaxes(sj @ ga, -1, -2)
            cosang = np.clip((np.trace(dm, axis1=-2, axis2=-1) - 1.0) / 2.0, -1.0, 1.0)
            best = np.minimum(best, np.arccos(cosang))
    return best


# --------------------------------------------------------------------------- random orientations
def random_quaternions(rng, n: int) -> np.ndarray:
    """``n`` orientations uniform on SO(3) (Shoemake's method), w >= 0.

    Parameters
    ----------
    rng : numpy.random.Generator or int or None
        Random generator, or a seed for one.
    n : int
        Number of orientations.

    Returns
    -------
    (n, 4) float array
        Unit quaternions ``(w, x, y, z)``.
    """
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    u1, u2, u3 = rng.uniform(size=(3, n))
    a, b = np.sqrt(1 - u1), np.sqrt(u1)
    q = np.stack([a * np.sin(2 * np.pi * u2), a * np.cos(2 * np.pi * u2),
                  b * np.sin(2 * np.pi * u3), b * np.cos(2 * np.pi * u3)], axis=1)
    return qnormalize(q)


def perturb(q: np.ndarray, rng, sigma_rad: float) -> np.ndarray:
    """Rotate each orientation by a small random rotation: rotation vector ~ N(0, σ² I₃).

    Parameters
    ----------
    q : (..., 4) float array
        Unit quaternions ``(w, x, y, z)``.
    rng : numpy.random.Generator or int or None
        Random generator, or a seed for one.
    sigma_rad : float
        Standard deviation of each rotation-vector component, in radians.

    Returns
    -------
    (..., 4) float array
        The rotated unit quaternions (noise applied on the left).
    """
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    q = np.asarray(q, dtype=np.float64)
    noise = rotvec_to_quat(rng.normal(scale=sigma_rad, size=q.shape[:-1] + (3,)))
    return qnormalize(qmul(noise, q))


# --------------------------------------------------------------------------- means
def reduce_to_reference(q: np.ndarray, ref: np.ndarray, ops) -> np.ndarray:
    """The symmetry-equivalent ``S ⊗ q`` (and sign) closest to ``ref``, element-wise.

    ``q`` and ``ref`` broadcast; returns (..., 4) with ``<result, ref> >= 0``.
    """
    if isinstance(ops, str):
        ops = symmetry_ops(ops)
    q = np.asarray(q, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    cands = qmul(ops, q[..., None, :])  # (..., K, 4)
    dots = np.einsum("...ki,...i->...k", cands, ref)
    k = np.argmax(np.abs(dots), axis=-1)
    best = np.take_along_axis(cands, k[..., None, None], axis=-2)[..., 0, :]
    sign = np.sign(np.take_along_axis(dots, k[..., None], axis=-1))
    sign[sign == 0] = 1.0
    return best * sign


def mean_orientation(q: np.ndarray, ops="1", weights=None, iterations: int = 3) -> np.ndarray:
    """Mean orientation of one grain: symmetry-reduce to the running mean, then average.

    Parameters
    ----------
    q : (n, 4) array
        Pixel orientations of the grain.
    ops : (K, 4) array or str
        Crystal symmetry.
    weights : (n,) array, optional
        Non-negative weight per pixel (default: all 1).
    iterations : int
        Re-reduction passes (the first reference is the first pixel).

    Returns
    -------
    (4,) array
        Unit quaternion (w >= 0). Valid for grains whose spread is well below the
        fundamental zone's size (any reconstructed grain).
    """
    q = np.asarray(q, dtype=np.float64).reshape(-1, 4)
    w = np.ones(len(q)) if weights is None else np.asarray(weights, dtype=np.float64)
    ref = q[0]
    for _ in range(max(iterations, 1)):
        red = reduce_to_reference(q, ref, ops)
        ref = qnormalize((w[:, None] * red).sum(0))
    return ref


def grain_mean_orientations(q: np.ndarray, labels: np.ndarray, ops="1", iterations: int = 2) -> np.ndarray:
    """Mean orientation of every grain of a label image at once (vectorised :func:`mean_orientation`).

    Parameters
    ----------
    q : (..., 4) array
        Pixel orientations (same leading shape as ``labels``).
    labels : int array
        Grain labels, 0 ignored.
    ops : (K, 4) array or str
    iterations : int

    Returns
    -------
    (labels.max() + 1, 4) array
        Row ``l`` is grain ``l``'s mean (row 0 and absent labels are NaN).
    """
    lab = np.asarray(labels).ravel().astype(np.int64)
    qq = np.asarray(q, dtype=np.float64).reshape(-1, 4)
    n = int(lab.max()) + 1 if lab.size else 1
    out = np.full((n, 4), np.nan)
    sel = np.flatnonzero(lab > 0)
    if sel.size == 0:
        return out
    lab_s, q_s = lab[sel], qq[sel]
    first = np.full(n, -1, dtype=np.int64)
    first[lab_s[::-1]] = np.arange(len(sel))[::-1]  # first pixel of each label
    ref = np.zeros((n, 4))
    present = first >= 0
    ref[present] = q_s[first[present]]
    chunk = 1 << 17  # bounded memory: (chunk, K, 4) candidates at a time
    for _ in range(max(iterations, 1)):
        sums = np.zeros((n, 4))
        for start in range(0, len(sel), chunk):
            ls = lab_s[start:start + chunk]
            red = reduce_to_reference(q_s[start:start + chunk], ref[ls], ops)
            sums += np.stack([np.bincount(ls, weights=red[:, k], minlength=n) for k in range(4)], 1)
        norm = np.linalg.norm(sums, axis=1)
        ok = norm > 0
        ref[ok] = sums[ok] / norm[ok, None]
    out[present] = qnormalize(ref[present])
    return out
