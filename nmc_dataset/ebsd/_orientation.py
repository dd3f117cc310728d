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

Conversions and the symmetry groups are :class:`scipy.spatial.transform.Rotation`'s; what is
kept here is the vectorised Hamilton product and the symmetry reduction (misorientation,
reduction to a reference, mean orientation). No dependency on orix (GPL).
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
from scipy.spatial.transform import Rotation

# --------------------------------------------------------------------------- quaternion algebra


def qmul(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Hamilton product ``p ⊗ q`` (broadcasting over leading axes; last axis = (w, x, y, z))."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    pw, px, py, pz = np.moveaxis(p, -1, 0)
    qw, qx, qy, qz = np.moveaxis(q, -1, 0)
    return np.stack(
        [
            pw * qw - px * qx - py * qy - pz * qz,
            pw * qx + px * qw + py * qz - pz * qy,
            pw * qy - px * qz + py * qw + pz * qx,
            pw * qz + px * qy - py * qx + pz * qw,
        ],
        axis=-1,
    )


def qconj(q: np.ndarray) -> np.ndarray:
    """Conjugate (= inverse of a unit quaternion)."""
    q = np.asarray(q, dtype=np.float64)
    return q * np.array([1.0, -1.0, -1.0, -1.0])


def qnormalize(q: np.ndarray) -> np.ndarray:
    """Unit quaternions with ``w >= 0`` (the canonical sign)."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[..., :1] < 0, -q, q)


def _rotations(q: np.ndarray) -> tuple[Rotation, tuple]:
    q = np.asarray(q, dtype=np.float64)
    return Rotation.from_quat(q.reshape(-1, 4), scalar_first=True), q.shape[:-1]


def _quats(r: Rotation, shape: tuple) -> np.ndarray:
    return qnormalize(r.as_quat(scalar_first=True)).reshape(shape + (4,))


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrices ``R(q)`` (..., 3, 3) of quaternions (..., 4) (normalised first)."""
    r, shape = _rotations(q)
    return r.as_matrix().reshape(shape + (3, 3))


def matrix_to_quat(m: np.ndarray) -> np.ndarray:
    """Unit quaternions (``w >= 0``) of rotation matrices (..., 3, 3)."""
    m = np.asarray(m, dtype=np.float64)
    return _quats(Rotation.from_matrix(m.reshape(-1, 3, 3)), m.shape[:-2])


def axis_angle_to_quat(axis, angle) -> np.ndarray:
    """Quaternion of the (active) rotation by ``angle`` (radians) about ``axis``."""
    axis = np.asarray(axis, dtype=np.float64)
    axis = axis / np.linalg.norm(axis, axis=-1, keepdims=True)
    return rotvec_to_quat(axis * np.asarray(angle, dtype=np.float64)[..., None])


def rotvec_to_quat(v: np.ndarray) -> np.ndarray:
    """Quaternions of rotation vectors (axis × angle in radians), shape (..., 3).

    The sign is the continuous one (``w = cos(angle / 2)``, negative beyond π), as a rotation
    vector's exponential map gives it.
    """
    v = np.asarray(v, dtype=np.float64)
    q = Rotation.from_rotvec(v.reshape(-1, 3)).as_quat(scalar_first=True).reshape(v.shape[:-1] + (4,))
    w = np.cos(0.5 * np.linalg.norm(v, axis=-1))
    return np.where((np.sign(q[..., 0]) * np.sign(w) < 0)[..., None], -q, q)


# --------------------------------------------------------------------------- Euler angles
# Bunge: the passive g = Z(φ2) X(Φ) Z(φ1) is the inverse of the active intrinsic rotation
# "ZXZ" by (φ1, Φ, φ2).
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
    return _quats(Rotation.from_euler("ZXZ", e.reshape(-1, 3)).inv(), e.shape[:-1])


def euler_to_matrix(euler: np.ndarray) -> np.ndarray:
    """Bunge orientation matrices ``g`` (..., 3, 3) from ``(φ1, Φ, φ2)`` in radians."""
    e = np.asarray(euler, dtype=np.float64)
    return Rotation.from_euler("ZXZ", e.reshape(-1, 3)).inv().as_matrix().reshape(e.shape[:-1] + (3, 3))


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
    r, shape = _rotations(q)
    with warnings.catch_warnings():  # gimbal lock: scipy sets the third angle to 0, as documented here
        warnings.simplefilter("ignore", UserWarning)
        e = r.inv().as_euler("ZXZ")
    return np.mod(e, 2 * np.pi).reshape(shape + (3,))


# --------------------------------------------------------------------------- symmetry
#: proper point group → scipy's group name and principal axis (the crystal frame of the module
#: docstring: c along z, the 2-fold axes of 32 and 622 in the basal plane from x, monoclinic 2 along y)
_GROUPS = {
    "1": ("C1", "Z"),
    "2": ("C2", "Y"),
    "222": ("D2", "Z"),
    "4": ("C4", "Z"),
    "422": ("D4", "Z"),
    "3": ("C3", "Z"),
    "32": ("D3", "Z"),
    "6": ("C6", "Z"),
    "622": ("D6", "Z"),
    "23": ("T", None),
    "432": ("O", None),
}

#: Accepted names → proper point group (the rotations that matter for orientations).
POINT_GROUP_ALIASES = {
    "1": "1",
    "-1": "1",
    "triclinic": "1",
    "2": "2",
    "2/m": "2",
    "m": "2",
    "monoclinic": "2",
    "222": "222",
    "mmm": "222",
    "mm2": "222",
    "orthorhombic": "222",
    "4": "4",
    "4/m": "4",
    "-4": "4",
    "422": "422",
    "4/mmm": "422",
    "4mm": "422",
    "-42m": "422",
    "tetragonal": "422",
    "3": "3",
    "-3": "3",
    "32": "32",
    "-3m": "32",
    "-3m1": "32",
    "3m": "32",
    "d3d": "32",
    "trigonal": "32",
    "6": "6",
    "6/m": "6",
    "-6": "6",
    "622": "622",
    "6/mmm": "622",
    "6mm": "622",
    "-6m2": "622",
    "hexagonal": "622",
    "23": "23",
    "m-3": "23",
    "432": "432",
    "m-3m": "432",
    "-43m": "432",
    "m3m": "432",
    "cubic": "432",
}


def proper_group_name(point_group: str) -> str:
    """The proper point group (e.g. ``"32"``) of a name such as ``"-3m"``, ``"m-3m"``, ``"6/mmm"``."""
    key = str(point_group).strip().lower()
    if key not in POINT_GROUP_ALIASES:
        raise ValueError(f"unknown point group {point_group!r}; known: {sorted(set(POINT_GROUP_ALIASES))}")
    return POINT_GROUP_ALIASES[key]


@functools.lru_cache(maxsize=None)
def _symmetry_ops_cached(name: str) -> np.ndarray:
    group, axis = _GROUPS[name]
    g = Rotation.create_group(group, axis=axis) if axis else Rotation.create_group(group)
    ops = qnormalize(g.as_quat(scalar_first=True))
    first = int(np.argmax(ops[:, 0]))  # the identity first
    out = np.concatenate([ops[first : first + 1], np.delete(ops, first, axis=0)])
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
        K = 1, 2, 4, 4, 8, 3, 6, 6, 12, 12, 24 for 1, 2, 222, 4, 422, 3, 32, 6, 622, 23, 432
        (:meth:`scipy.spatial.transform.Rotation.create_group` in the crystal frame above).
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
    q = np.stack(
        [
            a * np.sin(2 * np.pi * u2),
            a * np.cos(2 * np.pi * u2),
            b * np.sin(2 * np.pi * u3),
            b * np.cos(2 * np.pi * u3),
        ],
        axis=1,
    )
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
            ls = lab_s[start : start + chunk]
            red = reduce_to_reference(q_s[start : start + chunk], ref[ls], ops)
            sums += np.stack([np.bincount(ls, weights=red[:, k], minlength=n) for k in range(4)], 1)
        norm = np.linalg.norm(sums, axis=1)
        ok = norm > 0
        ref[ok] = sums[ok] / norm[ok, None]
    out[present] = qnormalize(ref[present])
    return out
