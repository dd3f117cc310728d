"""Cycling sequences of a packed electrode: lattice strain, intergranular cracks, compaction.

A sequence is a list of states ``t = 0 … T−1`` of one electrode (``pack`` output with grain
orientations). State 0 is the reference (the electrode itself). Every later state is the image of
the reference under a known map ``x ↦ x + u(x)``, with material removed where cracks opened.
Everything is in voxels of the reference grid, axes ``(z, y, x)``.

Schedule
--------
State ``t`` lies at cycle ``c_t = cycles · t / (T − 1)``; its delithiation ``x`` (``Li₁₋ₓ``) follows
a triangle wave between ``soc.min`` (at whole cycles) and ``soc.max`` (at half cycles). Drifts
(compaction, rigid motions) grow in proportion to ``s_t = c_t / cycles``.

Lattice strain per grain
------------------------
NMC811 is hexagonal (R-3m) in its layered setting; ``a(x)`` and ``c(x)`` are interpolated
(piecewise-linear) in :data:`NMC811_LATTICE` (see ``docs/sequences.md`` for the sources).
Grain ``g`` with crystal → box rotation ``Q_g`` (from the electrode's ``grains`` table) stretches by

    F_g = Q_g diag(a/a₀, a/a₀, c/c₀) Q_gᵀ,          a₀ = a(x_ref), c₀ = c(x_ref), x_ref = soc.min

(``lattice.scale`` multiplies ``F_g − I``).

Displacement (a documented compatible approximation, not an elastic solve)
-------------------------------------------------------------------------
With ``r = x − c_k`` the minimum-image offset from the centre of particle ``k``, ``r_g`` the mean of
``r`` over grain ``g``, ``F_k`` the voxel-weighted mean of the particle's ``F_g`` and ``R_k`` its small
rigid rotation (translation ``t_k``)::

    u(x) = G (x − x_c) + b(x) + (R_k F_k − I) r + t_k + S_σ[R_k (F_g − F_k)(r − r_g)]

``G`` is the affine compaction gradient (``compaction.strain``, about the box centre ``x_c``), ``b`` a
smooth random field, periodic over the box (white noise filtered by a Gaussian of
``compaction.random_length_um`` in Fourier space, without its mean, scaled to an rms of
``compaction.random_vox`` per component). The last term is the free misfit
of each grain about its own centroid; ``S_σ`` is a Gaussian smoothing restricted to the active
material (normalised convolution, σ = ``lattice.junction_vox``), which makes ``u`` continuous across
grain boundaries. So: inside a grain farther than ~3σ from its boundary the deformation gradient
is exactly ``R_k F_g`` (each grain's volume changes by ``det F_g``); the particle as a whole
deforms by ``R_k F_k``; in the junction layer (width ~σ on both sides) the strain is the blend.
The approximation is kinematic: stresses are not in equilibrium, the misfit is not
accommodated elastically (an elastic solve would spread it over the grains); the residual
``sym ∇u − (F_g − I)`` is reported per state (``misfit_rms``). Pores and binder within a few voxels
of a particle move with their nearest particle (binder adheres), farther pores with the
background ``G (x − x_c) + b``.

Cracks
------
Interfaces are the face-adjacent voxel pairs of two grains of one particle; the interface normal
``n`` is the normalised sum of their face normals. The lattice misfit of an interface is the
in-plane part of the stretch jump: ``m = ‖P (F_g − F_h) P‖_F`` with ``P = I − n nᵀ``; since
``F_g − F_h = (c/c₀ − a/a₀) (ĉ_g ĉ_gᵀ − ĉ_h ĉ_hᵀ)``, ``m = |c/c₀ − a/a₀| · m̂`` with a geometric factor
``m̂`` fixed by the two c-axes. In each particle, crack ``j = 0, 1, …`` nucleates at cycle
``c_j = onset_cycle + j / nuclei_per_cycle`` on the free interface of largest ``m̂`` whose misfit
(at the largest anisotropy reached so far) is at least ``misfit_threshold``; it then grows by
``growth_per_cycle`` interfaces per cycle, each time taking the neighbouring interface (sharing a
grain with the crack) of largest ``m̂`` with misfit ≥ ``growth_misfit``, and opens linearly to
``width_vox`` over ``opening_cycles``. A voxel of grain ``g`` belongs to a crack through interface
``(g, h)`` of width ``w`` when its centre lies within ``w / 2`` of the interface (distance to grain
``h``'s nearest voxel centre ≤ ``½ + w/2``). Crack voxels are removed material: their labels become
pore, their displacement NaN, the ``crack`` volume holds the crack id. Cracks never heal.

Deformed labels
---------------
The label at deformed voxel ``y`` is the reference label at the nearest voxel to ``X`` with
``X + u(X) = y``, solved by the fixed-point iteration ``X ← y − u(X)`` (``u`` interpolated
trilinearly; periodic parts wrap in a periodic box, the affine part does not). The iteration
contracts with factor ``|∇u|`` (a few 10⁻²), so 5 steps reach ~10⁻⁶ voxel. Labels are whole
voxels and cannot move by less than one; the sub-voxel motion is kept in the partial-volume
fractions ``nmc_fraction`` and ``binder_fraction``: the reference indicators (NMC without the
state's cracks; binder) interpolated trilinearly at ``X``. ``render-ct`` renders from these
fractions when a file has them, so the CT content moves exactly by ``u`` (brightness constancy, the
assumption of DVC), not by ``u`` rounded to the label grid.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numba
import numpy as np
import yaml
from scipy import ndimage
from scipy.spatial.transform import Rotation

from nmc_dataset.errors import InputError

PROTOCOL_FORMAT = "nmc-dataset/sequence-protocol"
#: largest |strain| (lattice, compaction) a protocol may impose
MAX_STRAIN = 0.15

#: NMC811 lattice parameters vs delithiation x in Li(1-x)Ni0.8Mn0.1Co0.1O2 (Å), piecewise-linear.
#: The curve follows the shape of the operando XRD curves of NMC811 (Märker et al., Chem. Mater. 31
#: (2019) 2545; de Biasi et al., J. Phys. Chem. C 121 (2017) 26163), but its points are not read
#: from a table of either paper. Its landmarks are values stated in text (docs/method.md,
#: "Literature values"; a test pins them): pristine a, c within 0.4 % of the cell a = 2.875,
#: c = 14.248 Å that indexes the EBSD of NMC811 (Fuchs et al., arXiv:2407.05333); the c maximum
#: (+1.9 %) at x = 0.6, where Ni-rich NMC starts to collapse "below 40 % lithium in the layers"
#: (Jousseaume et al., Energy Environ. Sci. 2024, doi:10.1039/d3ee04115h); c 5 % below its maximum
#: at x = 0.8 ("c-axis lattice shrinkage of around 5 %" at 80 mol% Li removal, Li et al., J. Am.
#: Chem. Soc. 2019, doi:10.1021/jacs.8b13798), held beyond; a shrinks monotonically to x = 0.75
#: (-2.0 %). Unit-cell volume a²c: -7.0 % at x = 0.8 (7.8 % is quoted for NMC811). Points between
#: the landmarks are interpolated by eye.
NMC811_LATTICE = {
    "x": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85],
    "a": [2.872, 2.862, 2.851, 2.840, 2.830, 2.822, 2.817, 2.815, 2.814, 2.814, 2.815],
    "c": [14.200, 14.230, 14.270, 14.320, 14.380, 14.440, 14.470, 14.400, 14.100, 13.750, 13.750],
}

DEFAULT_PROTOCOL = {
    "cycles": 1.0,
    "soc": {"min": 0.0, "max": 0.8},
    "lattice": {"table": "nmc811", "scale": 1.0, "junction_vox": 1.0},
    "cracks": {
        "nuclei_per_cycle": 1.0,
        "onset_cycle": 0.1,
        "misfit_threshold": 0.005,
        "growth_per_cycle": 3.0,
        "growth_misfit": 0.002,
        "width_vox": 2.0,
        "opening_cycles": 0.5,
    },
    "compaction": {"strain": {"zz": -0.01}, "random_vox": 0.2, "random_length_um": 1.0},
    "rigid": {"translation_vox": 0.2, "rotation_deg": 0.2},
}
_STRAIN_KEYS = ("zz", "yy", "xx", "yz", "xz", "xy")
_STREAM_RIGID, _STREAM_FIELD = 31, 32


# --------------------------------------------------------------------------- protocol
def _num(value, where, *, lo=None, hi=None, lo_open=False):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        hint = ""
        if isinstance(value, str):
            try:
                hint = f" (YAML reads {value} as text: write it as {float(value):.1e})"
            except ValueError:
                pass
        raise InputError(f"must be a number, got {value!r}{hint}", where)
    if lo is not None and (value < lo or (lo_open and value == lo)):
        raise InputError(f"must be {'>' if lo_open else '>='} {lo}, got {value}", where)
    if hi is not None and value > hi:
        raise InputError(f"must be <= {hi}, got {value}", where)
    return float(value)


def validate_protocol(raw: dict | None, where: str = "protocol") -> dict:
    """A complete, checked protocol: ``raw``'s values over :data:`DEFAULT_PROTOCOL`.

    Parameters
    ----------
    raw : dict or None
        The protocol as read (sections ``cycles``, ``soc``, ``lattice``, ``cracks``, ``compaction``,
        ``rigid`` and an optional ``format``); missing keys take the defaults, ``None`` = all defaults.
    where : str, default "protocol"
        Where the protocol came from (a file name), named in error messages.

    Returns
    -------
    dict
        A new protocol with every key of :data:`DEFAULT_PROTOCOL`, numbers as float, ``lattice.table``
        as a mapping ``{x, a, c}`` of lists and ``compaction.strain`` with all six components.

    Raises
    ------
    InputError
        An unknown key, a non-number, a negative width/rate/length, ``soc`` outside [0, 0.85] or
        ``min > max``, or a strain beyond ±15 % (lattice over the SOC range, compaction).
    """
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise InputError("a protocol is a mapping of sections (cycles, soc, lattice, cracks, compaction, rigid)", where)
    p = copy.deepcopy(DEFAULT_PROTOCOL)
    for key, value in raw.items():
        if key == "format":
            if value != PROTOCOL_FORMAT:
                raise InputError(f"format must be {PROTOCOL_FORMAT!r}, got {value!r}", where)
            continue
        if key not in p:
            raise InputError(f"unknown key {key!r} (known: {', '.join(p)})", where)
        if key == "cycles":
            p[key] = _num(value, f"{where}: cycles", lo=0)
            continue
        if not isinstance(value, dict):
            raise InputError(f"{key} must be a mapping", where)
        for k, v in value.items():
            if k not in p[key]:
                raise InputError(f"unknown key {key}.{k} (known: {', '.join(p[key])})", where)
            p[key][k] = v
    w = lambda k: f"{where}: {k}"  # noqa: E731
    s = p["soc"]
    s["min"] = _num(s["min"], w("soc.min"), lo=0, hi=0.85)
    s["max"] = _num(s["max"], w("soc.max"), lo=0, hi=0.85)
    if s["min"] > s["max"]:
        raise InputError(f"soc.min {s['min']} is above soc.max {s['max']}", where)
    lat = p["lattice"]
    table = lat["table"]
    if table == "nmc811":
        table = NMC811_LATTICE
    if not (isinstance(table, dict) and set(table) == {"x", "a", "c"}):
        raise InputError("lattice.table must be nmc811 or a mapping {x: [...], a: [...], c: [...]} (Å)", where)
    try:
        arr = {k: np.asarray([_num(v, "lattice.table") for v in table[k]], dtype=np.float64) for k in "xac"}
    except (InputError, TypeError):
        raise InputError("lattice.table: x, a and c must be lists of numbers (a, c in Å)", where) from None
    if not (
        arr["x"].ndim == 1
        and len(arr["x"]) >= 2
        and all(arr[k].shape == arr["x"].shape for k in "ac")
        and np.all(np.diff(arr["x"]) > 0)
        and np.all(arr["a"] > 0)
        and np.all(arr["c"] > 0)
    ):
        raise InputError("lattice.table needs >= 2 increasing x values and positive a, c of the same length", where)
    lat["table"] = {k: arr[k].tolist() for k in "xac"}
    lat["scale"] = _num(lat["scale"], w("lattice.scale"), lo=0)
    lat["junction_vox"] = _num(lat["junction_vox"], w("lattice.junction_vox"), lo=0)
    xs = np.linspace(s["min"], s["max"], 200)
    ea, ec = lattice_strain(lat, xs, s["min"])
    worst = float(max(np.abs(ea).max(), np.abs(ec).max()))
    if worst > MAX_STRAIN:
        raise InputError(f"the lattice strain reaches {worst:.3g}, beyond ±{MAX_STRAIN:.0%} (lattice.scale)", where)
    c = p["cracks"]
    for k in c:
        c[k] = _num(c[k], w(f"cracks.{k}"), lo=0)
    if c["opening_cycles"] <= 0:
        raise InputError("cracks.opening_cycles must be > 0", where)
    comp = p["compaction"]
    strain = comp["strain"] or {}
    if not isinstance(strain, dict):
        raise InputError(f"compaction.strain must be a mapping of {', '.join(_STRAIN_KEYS)}", where)
    for k, v in strain.items():
        if k not in _STRAIN_KEYS:
            raise InputError(f"unknown key compaction.strain.{k} (known: {', '.join(_STRAIN_KEYS)})", where)
        v = _num(v, w(f"compaction.strain.{k}"))
        if abs(v) > MAX_STRAIN:
            raise InputError(f"compaction.strain.{k} = {v} is beyond ±{MAX_STRAIN:.0%}", where)
        strain[k] = v
    comp["strain"] = {k: float(strain.get(k, 0.0)) for k in _STRAIN_KEYS}
    comp["random_vox"] = _num(comp["random_vox"], w("compaction.random_vox"), lo=0)
    comp["random_length_um"] = _num(
        comp["random_length_um"], w("compaction.random_length_um"), lo=0, lo_open=comp["random_vox"] > 0
    )
    r = p["rigid"]
    r["translation_vox"] = _num(r["translation_vox"], w("rigid.translation_vox"), lo=0)
    r["rotation_deg"] = _num(r["rotation_deg"], w("rigid.rotation_deg"), lo=0, hi=10)
    return p


def load_protocol(path) -> dict:
    """Read and validate a protocol YAML file (see :func:`validate_protocol`).

    Parameters
    ----------
    path : str or path-like
        The YAML file.

    Returns
    -------
    dict
        The complete, checked protocol.

    Raises
    ------
    InputError
        The file does not exist, is not valid YAML, or its protocol is invalid.
    """

    path = Path(path)
    if not path.exists():
        raise InputError("not found", path)
    if not path.is_file():
        raise InputError("is not a file (a protocol is one YAML file)", path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise InputError(f"not valid YAML ({str(e).splitlines()[0]})", path) from None
    except UnicodeDecodeError:
        raise InputError("not a text (YAML) file", path) from None
    return validate_protocol(raw, str(path))


def lattice_strain(lattice: dict, x, x_ref: float):
    """``(a(x)/a(x_ref) − 1, c(x)/c(x_ref) − 1)`` times ``lattice.scale`` (piecewise-linear table).

    Parameters
    ----------
    lattice : dict
        A validated protocol's ``lattice`` section: ``table`` (mapping ``{x, a, c}`` of lists, lattice
        parameters in Å against delithiation ``x``) and ``scale``; values beyond the table are held
        at its ends.
    x : float or array_like
        Delithiation ``x`` (``Li₁₋ₓ``) at which to evaluate.
    x_ref : float
        Reference delithiation (zero strain).

    Returns
    -------
    strain_a, strain_c : float or ndarray
        Relative change of the ``a`` and ``c`` lattice parameters, shaped as ``x``.
    """
    t = lattice["table"]
    a = np.interp(x, t["x"], t["a"]) / np.interp(x_ref, t["x"], t["a"]) - 1.0
    c = np.interp(x, t["x"], t["c"]) / np.interp(x_ref, t["x"], t["c"]) - 1.0
    return a * lattice["scale"], c * lattice["scale"]


def schedule(protocol: dict, steps: int):
    """Cycle number and delithiation ``x`` of each state: ``(cycles (T,), soc (T,))``."""
    T = int(steps)
    c = np.zeros(T) if T == 1 else protocol["cycles"] * np.arange(T) / (T - 1)
    return c, soc_at(protocol, c)


def soc_at(protocol: dict, c):
    """Delithiation at cycle ``c``: triangle wave, ``soc.min`` at whole cycles, ``soc.max`` at half cycles."""
    f = np.mod(np.asarray(c, dtype=np.float64), 1.0)
    tri = 1.0 - np.abs(1.0 - 2.0 * f)
    return protocol["soc"]["min"] + (protocol["soc"]["max"] - protocol["soc"]["min"]) * tri


# --------------------------------------------------------------------------- geometry helpers
def quat_matrices_zyx(q_wxyz: np.ndarray) -> np.ndarray:
    """Crystal → box rotation matrices in ``(z, y, x)`` box coordinates (rows) from ``(w, x, y, z)`` quaternions;
    columns stay the crystal axes (a1, a2⊥, c)."""

    R = Rotation.from_quat(np.asarray(q_wxyz, dtype=np.float64).reshape(-1, 4), scalar_first=True).as_matrix()
    return R[:, ::-1, :]  # box rows x, y, z -> z, y, x


def grain_stretches(Q_zyx: np.ndarray, ea: float, ec: float) -> np.ndarray:
    """``F_g = Q diag(1+ea, 1+ea, 1+ec) Qᵀ`` per grain (M, 3, 3), box ``(z, y, x)`` components."""
    d = np.array([1.0 + ea, 1.0 + ea, 1.0 + ec])
    return np.einsum("gik,k,gjk->gij", Q_zyx, d, Q_zyx)


def _min_image(d, n, periodic):
    return d - n * np.round(d / n) if periodic else d


# --------------------------------------------------------------------------- pull-back kernel
@numba.njit(cache=True, inline="always")
def _lerp3(v, z, y, x, periodic):
    nz, ny, nx = v.shape[0], v.shape[1], v.shape[2]
    if not periodic:
        z = min(max(z, 0.0), nz - 1.0)
        y = min(max(y, 0.0), ny - 1.0)
        x = min(max(x, 0.0), nx - 1.0)
    z0, y0, x0 = math.floor(z), math.floor(y), math.floor(x)
    fz, fy, fx = z - z0, y - y0, x - x0
    out0 = 0.0
    out1 = 0.0
    out2 = 0.0
    for dz in range(2):
        wz = fz if dz else 1.0 - fz
        iz = (z0 + dz) % nz if periodic else min(z0 + dz, nz - 1)
        for dy in range(2):
            wy = fy if dy else 1.0 - fy
            iy = (y0 + dy) % ny if periodic else min(y0 + dy, ny - 1)
            for dx in range(2):
                wx = fx if dx else 1.0 - fx
                ix = (x0 + dx) % nx if periodic else min(x0 + dx, nx - 1)
                w = wz * wy * wx
                out0 += w * v[iz, iy, ix, 0]
                out1 += w * v[iz, iy, ix, 1]
                out2 += w * v[iz, iy, ix, 2]
    return out0, out1, out2


@numba.njit(parallel=True, cache=True)
def _pull_back_nb(v, G, centre, periodic, n_iter, out):
    nz, ny, nx = v.shape[0], v.shape[1], v.shape[2]
    for k in numba.prange(nz):
        for j in range(ny):
            for i in range(nx):
                Z, Y, X = float(k), float(j), float(i)
                for _ in range(n_iter):
                    a0, a1, a2 = _lerp3(v, Z, Y, X, periodic)
                    dz, dy, dx = Z - centre[0], Y - centre[1], X - centre[2]
                    u0 = G[0, 0] * dz + G[0, 1] * dy + G[0, 2] * dx + a0
                    u1 = G[1, 0] * dz + G[1, 1] * dy + G[1, 2] * dx + a1
                    u2 = G[2, 0] * dz + G[2, 1] * dy + G[2, 2] * dx + a2
                    Z, Y, X = k - u0, j - u1, i - u2
                out[k, j, i, 0] = Z
                out[k, j, i, 1] = Y
                out[k, j, i, 2] = X


def pull_back(v: np.ndarray, G: np.ndarray, centre, periodic: bool, n_iter: int = 5) -> np.ndarray:
    """Reference position ``X`` (Z, Y, X, 3) float64 with ``X + u(X) = y``, for every voxel ``y``.

    ``u(X) = G (X − centre) + v(X)``, ``v`` (Z, Y, X, 3) interpolated trilinearly (wrapping when
    ``periodic``, clamped otherwise); ``X`` is not wrapped.
    """
    out = np.empty(v.shape[:3] + (3,), dtype=np.float64)
    _pull_back_nb(
        np.ascontiguousarray(v, dtype=np.float32),
        np.asarray(G, np.float64),
        np.asarray(centre, np.float64),
        bool(periodic),
        int(n_iter),
        out,
    )
    return out


def nearest_index(pos: np.ndarray, shape, periodic: bool) -> np.ndarray:
    """Flat index of the voxel nearest to each position (wrapped when periodic; −1 outside otherwise)."""
    r = np.floor(pos + 0.5).astype(np.int64)
    n = np.asarray(shape)
    if periodic:
        r %= n
        ok = np.ones(r.shape[:-1], bool)
    else:
        ok = np.all((r >= 0) & (r < n), axis=-1)
        r = np.where(ok[..., None], r, 0)
    flat = (r[..., 0] * shape[1] + r[..., 1]) * shape[2] + r[..., 2]
    return np.where(ok, flat, -1)


def interpolate_at(values: np.ndarray, pos: np.ndarray, periodic: bool) -> np.ndarray:
    """Trilinear interpolation of a 3D float volume at positions (…, 3); 0 outside a non-periodic box."""

    coords = np.moveaxis(pos, -1, 0).reshape(3, -1)
    out = ndimage.map_coordinates(values, coords, order=1, mode="grid-wrap" if periodic else "constant", cval=0.0)
    return out.reshape(pos.shape[:-1]).astype(np.float32)


# --------------------------------------------------------------------------- interfaces and cracks
class Interfaces:
    """Grain interfaces of one reference electrode (face-adjacent voxel pairs of two grains of a particle)."""

    def __init__(self, grain: np.ndarray, grain_particle: np.ndarray, periodic: bool):
        shape = grain.shape
        keys, normals, flat_a, flat_b = [], [], [], []
        M = len(grain_particle)
        idx = np.arange(grain.size, dtype=np.int64).reshape(shape)
        for axis in range(3):
            if periodic:
                a, b = grain, np.roll(grain, -1, axis)
                ia, ib = idx, np.roll(idx, -1, axis)
            else:
                sl_a = [slice(None)] * 3
                sl_b = [slice(None)] * 3
                sl_a[axis], sl_b[axis] = slice(0, -1), slice(1, None)
                a, b, ia, ib = grain[tuple(sl_a)], grain[tuple(sl_b)], idx[tuple(sl_a)], idx[tuple(sl_b)]
            m = (a > 0) & (b > 0) & (a != b)
            ga, gb = a[m].astype(np.int64), b[m].astype(np.int64)
            same = grain_particle[ga - 1] == grain_particle[gb - 1]
            ga, gb, fa, fb = ga[same], gb[same], ia[m][same], ib[m][same]
            lo, hi = np.minimum(ga, gb), np.maximum(ga, gb)
            keys.append(lo * (M + 1) + hi)
            nrm = np.zeros((len(ga), 3))
            nrm[:, axis] = np.where(ga == lo, 1.0, -1.0)  # face normal pointing from the lower grain id
            normals.append(nrm)
            flat_a.append(np.where(ga == lo, fa, fb))  # voxel on the lower-id side
            flat_b.append(np.where(ga == lo, fb, fa))
        keys = np.concatenate(keys)
        uniq, inv, counts = np.unique(keys, return_inverse=True, return_counts=True)
        self.pairs = np.stack([uniq // (M + 1), uniq % (M + 1)], 1)  # (P, 2) global grain ids, lo < hi
        self.area = counts  # voxel faces
        nsum = np.stack(
            [np.bincount(inv, weights=np.concatenate(normals)[:, a], minlength=len(uniq)) for a in range(3)], 1
        )
        self.normal = nsum / np.maximum(np.linalg.norm(nsum, axis=1), 1e-12)[:, None]
        order = np.argsort(inv, kind="stable")
        self._fa = np.concatenate(flat_a)[order]
        self._fb = np.concatenate(flat_b)[order]
        self._start = np.concatenate([[0], np.cumsum(counts)])
        self.particle = grain_particle[self.pairs[:, 0] - 1]
        self.shape = shape
        self.periodic = periodic
        # grain -> interfaces
        g = np.concatenate([self.pairs[:, 0], self.pairs[:, 1]])
        pi = np.concatenate([np.arange(len(uniq))] * 2)
        o = np.argsort(g, kind="stable")
        self._g_sorted, self._g_pairs = g[o], pi[o]

    def __len__(self):
        return len(self.pairs)

    def of_grain(self, g: int) -> np.ndarray:
        lo, hi = np.searchsorted(self._g_sorted, [g, g + 1])
        return self._g_pairs[lo:hi]

    def face_voxels(self, i: int):
        """Flat indices of the voxels on the lower-id and the higher-id side of interface ``i``."""
        s = slice(self._start[i], self._start[i + 1])
        return self._fa[s], self._fb[s]

    def geometric_misfit(self, c_axes: np.ndarray) -> np.ndarray:
        """``m̂ = ‖P (ĉ_g ĉ_gᵀ − ĉ_h ĉ_hᵀ) P‖_F`` per interface (``c_axes`` (M, 3), box z, y, x)."""
        cg, ch = c_axes[self.pairs[:, 0] - 1], c_axes[self.pairs[:, 1] - 1]
        D = cg[:, :, None] * cg[:, None, :] - ch[:, :, None] * ch[:, None, :]
        P = np.eye(3)[None] - self.normal[:, :, None] * self.normal[:, None, :]
        return np.linalg.norm(P @ D @ P, axis=(1, 2))


def plan_cracks(inter: Interfaces, mhat: np.ndarray, protocol: dict, cycle_end: float) -> list[dict]:
    """Nucleus, nucleation cycle and growth order (interface indices) of every crack up to ``cycle_end``.

    Each crack: ``{"id", "particle", "cycle", "interfaces"}``; see the module docs for the rule.
    """
    cr = protocol["cracks"]
    rate = cr["nuclei_per_cycle"]
    if rate <= 0 or len(inter) == 0 or cycle_end <= cr["onset_cycle"]:
        return []
    # largest anisotropy |c/c0 - a/a0| reached up to cycle c (fine sampling of the schedule)
    cs = np.linspace(0.0, cycle_end, max(2, int(400 * max(cycle_end, 1.0)) + 1))
    ea, ec = lattice_strain(protocol["lattice"], soc_at(protocol, cs), protocol["soc"]["min"])
    aniso = np.maximum.accumulate(np.abs(ec - ea))
    n_max = int(math.floor((cycle_end - cr["onset_cycle"]) * rate - 1e-12)) + 1
    growth_total = cr["growth_per_cycle"] * cycle_end
    taken = np.zeros(len(inter), bool)
    cracks = []
    for k in np.unique(inter.particle):
        mine = np.flatnonzero(inter.particle == k)
        ranked = mine[np.lexsort((mine, -mhat[mine]))]
        pos = 0
        for j in range(n_max):
            cj = cr["onset_cycle"] + j / rate
            a = float(np.interp(cj, cs, aniso))
            while pos < len(ranked) and taken[ranked[pos]]:
                pos += 1
            if pos >= len(ranked) or mhat[ranked[pos]] * a < cr["misfit_threshold"]:
                break
            seq = [int(ranked[pos])]
            taken[ranked[pos]] = True
            grains = set(inter.pairs[ranked[pos]].tolist())
            n_grow = int(math.floor(cr["growth_per_cycle"] * (cycle_end - cj) + 1e-9))
            for _ in range(min(n_grow, int(growth_total) + 1)):
                cand = np.unique(np.concatenate([inter.of_grain(g) for g in grains]))
                cand = cand[~taken[cand]]
                # growth uses the anisotropy reached by the end of the plan: a monotone, conservative rule
                cand = cand[mhat[cand] * float(aniso[-1]) >= cr["growth_misfit"]]
                if not len(cand):
                    break
                best = int(cand[np.lexsort((cand, -mhat[cand]))][0])
                seq.append(best)
                taken[best] = True
                grains.update(inter.pairs[best].tolist())
            cracks.append({"id": len(cracks) + 1, "particle": int(k), "cycle": float(cj), "interfaces": seq})
    return cracks


def crack_volume(
    inter: Interfaces,
    grain: np.ndarray,
    cracks: list[dict],
    protocol: dict,
    cycle: float,
    previous: np.ndarray | None = None,
):
    """Crack labels (uint32, reference grid) at ``cycle`` and per-crack summaries.

    ``previous``: the labels of an earlier state; its crack voxels keep their ids (a voxel belongs to
    the crack that reached it first), new voxels go to the lowest id that reaches them.
    """
    cr = protocol["cracks"]
    shape = grain.shape
    n = np.array(shape)
    out = np.zeros(shape, dtype=np.uint32) if previous is None else previous.astype(np.uint32, copy=True)
    summary = []

    for c in cracks:
        age = cycle - c["cycle"]
        if age <= 0:
            continue
        width = cr["width_vox"] * min(1.0, age / cr["opening_cycles"])
        n_if = 1 + int(math.floor(cr["growth_per_cycle"] * age + 1e-9))
        ifs = c["interfaces"][:n_if]
        area = int(sum(inter.area[i] for i in ifs))
        if width > 0:
            reach = 0.5 + 0.5 * width
            m = int(math.ceil(reach)) + 1
            for i in ifs:
                fa, fb = inter.face_voxels(i)
                g_lo, g_hi = inter.pairs[i]
                pts = np.stack(np.unravel_index(np.concatenate([fa, fb]), shape), 1)
                ref = pts[0]
                rel = _min_image(pts - ref, n, inter.periodic).astype(np.int64)
                lo = rel.min(0) - m
                hi = rel.max(0) + m + 1
                axes = [(ref[a] + np.arange(lo[a], hi[a])) for a in range(3)]
                if inter.periodic:
                    axes = [ax % n[a] for a, ax in enumerate(axes)]
                else:
                    axes = [ax[(ax >= 0) & (ax < n[a])] for a, ax in enumerate(axes)]
                block = grain[np.ix_(*axes)]
                for other, g_side in ((g_hi, g_lo), (g_lo, g_hi)):
                    d = ndimage.distance_transform_edt(block != other)
                    kk, jj, ii = np.nonzero((block == g_side) & (d <= reach + 1e-9))
                    flat = np.ravel_multi_index((axes[0][kk], axes[1][jj], axes[2][ii]), shape)
                    new = out.ravel()[flat] == 0
                    out.ravel()[flat[new]] = c["id"]
        summary.append(
            {
                "id": c["id"],
                "particle": c["particle"],
                "nucleation_cycle": c["cycle"],
                "interfaces": len(ifs),
                "interface_area_vox": area,
                "width_vox": float(width),
                "grains": sorted({int(g) for i in ifs for g in inter.pairs[i]}),
            }
        )
    counts = np.bincount(out.ravel(), minlength=len(cracks) + 1)
    for c in summary:
        c["voxels"] = int(counts[c["id"]])
    return out, summary


# --------------------------------------------------------------------------- the model
class Sequence:
    """The evolution model of one reference electrode (see module docs).

    Parameters
    ----------
    arrays : dict
        ``phase``, ``particle``, ``grain`` of the reference electrode.
    particles : dict
        The electrode's ``particles`` table (``center_um``).
    grains : dict
        The ``grains`` table (``orientation_wxyz``, ``particle``).
    voxel_size_um : float
    periodic : bool
    protocol : dict
        From :func:`validate_protocol`.
    steps : int
        Number of states (including the reference).
    seed : int
    """

    def __init__(self, arrays, particles, grains, *, voxel_size_um, periodic, protocol, steps, seed):

        self.phase = arrays["phase"]
        self.particle = arrays["particle"]
        self.grain = arrays["grain"]
        self.shape = self.phase.shape
        self.n = np.array(self.shape)
        self.h = float(voxel_size_um)
        self.periodic = bool(periodic)
        self.protocol = protocol
        self.steps = int(steps)
        if self.steps < 1:
            raise InputError(f"must be >= 1, got {steps}", "--steps")
        self.seed = int(seed)
        self.cycles, self.soc = schedule(protocol, self.steps)
        q = np.asarray(grains["orientation_wxyz"], dtype=np.float64)
        self.Q = quat_matrices_zyx(q)
        self.grain_particle = np.asarray(grains["particle"], dtype=np.int64)
        M = len(q)
        if self.grain.max() > M:
            raise InputError(f"the grain labels reach {int(self.grain.max())} but the grains table has {M} rows")
        N = len(particles["center_um"])
        self.N = N
        self.centres = np.asarray(particles["center_um"], dtype=np.float64) / self.h - 0.5  # voxel coords z, y, x
        # minimum-image offsets r = x - c_k over the particle voxels
        self.sel = np.flatnonzero(self.particle.ravel() > 0)
        pk = self.particle.ravel()[self.sel].astype(np.int64) - 1
        self.pk = pk
        coords = np.stack(np.unravel_index(self.sel, self.shape), 1).astype(np.float64)
        self.r = _min_image(coords - self.centres[pk], self.n, self.periodic)
        gk = self.grain.ravel()[self.sel].astype(np.int64) - 1
        self.gk = gk
        cnt = np.bincount(gk, minlength=M).astype(np.float64)
        self.grain_voxels = cnt
        self.r_g = (
            np.stack([np.bincount(gk, weights=self.r[:, a], minlength=M) for a in range(3)], 1)
            / np.maximum(cnt, 1)[:, None]
        )
        # nearest particle voxel of every voxel within a band around the particles (pores, binder)
        band = 4
        solid = self.particle > 0
        if self.periodic:
            m = min(band + 2, int(self.n.min()) // 2)
            pad = np.pad(~solid, m, mode="wrap")
            dist, ind = ndimage.distance_transform_edt(pad, return_indices=True)
            dist = dist[m:-m, m:-m, m:-m]
            ind = [(ind[a][m:-m, m:-m, m:-m] - m) % self.n[a] for a in range(3)]
        else:
            dist, ind = ndimage.distance_transform_edt(~solid, return_indices=True)
        near = (dist > 0) & (dist <= band)
        self.band_sel = np.flatnonzero(near.ravel())
        self.band_src = np.ravel_multi_index(tuple(ind[a].ravel()[self.band_sel] for a in range(3)), self.shape)
        bk = self.particle.ravel()[self.band_src].astype(np.int64) - 1
        self.band_pk = bk
        bcoords = np.stack(np.unravel_index(self.band_sel, self.shape), 1).astype(np.float64)
        self.band_r = _min_image(bcoords - self.centres[bk], self.n, self.periodic)
        del dist, ind, near
        # rigid motions and the random field (fixed shapes, scaled by progress)
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(_STREAM_RIGID,)))
        rg = protocol["rigid"]
        self.t_k = rng.normal(0.0, rg["translation_vox"], (N, 3))
        self.w_k = rng.normal(0.0, np.radians(rg["rotation_deg"]), (N, 3))
        comp = protocol["compaction"]
        s = comp["strain"]
        self.G = np.array([[s["zz"], s["yz"], s["xz"]], [s["yz"], s["yy"], s["xy"]], [s["xz"], s["xy"], s["xx"]]])
        self.box_centre = (self.n - 1) / 2.0
        self.field = None
        if comp["random_vox"] > 0:
            from scipy import fft

            frng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(_STREAM_FIELD,)))
            sigma = comp["random_length_um"] / self.h
            # Gaussian filter as a product in Fourier space (periodic over the box; O(N log N) for any σ)
            k2 = sum(
                np.square(2 * np.pi * fq).reshape([-1 if i == a else 1 for i in range(3)])
                for a, fq in enumerate(
                    (np.fft.fftfreq(self.shape[0]), np.fft.fftfreq(self.shape[1]), np.fft.rfftfreq(self.shape[2]))
                )
            )
            transfer = np.exp(-0.5 * sigma**2 * k2).astype(np.float32)
            f = np.empty(self.shape + (3,), dtype=np.float32)
            for a in range(3):
                spec = fft.rfftn(frng.standard_normal(self.shape).astype(np.float32), workers=-1) * transfer
                spec[0, 0, 0] = 0  # no uniform part: that would be a rigid translation of the whole box
                w = fft.irfftn(spec, s=self.shape, workers=-1).astype(np.float32)
                f[..., a] = w * (comp["random_vox"] / max(float(w.std()), 1e-30))
            steepest = _max_gradient(f, self.periodic)
            if steepest > MAX_STRAIN:
                raise InputError(
                    f"the random field ({comp['random_vox']:g} voxel rms over {sigma:.3g} voxels) has a "
                    f"displacement gradient up to {steepest:.3g} at this voxel size, beyond ±{MAX_STRAIN:.0%}; "
                    "lower compaction.random_vox or raise compaction.random_length_um",
                    "protocol",
                )
            self.field = f
        # interfaces and the crack plan
        self.c_axes = self.Q[:, :, 2]
        self.interfaces = Interfaces(self.grain, self.grain_particle, self.periodic)
        self.mhat = self.interfaces.geometric_misfit(self.c_axes)
        self.cracks = plan_cracks(self.interfaces, self.mhat, protocol, float(self.cycles[-1]))

    # ------------------------------------------------------------------ fields
    def stretches(self, t: int) -> tuple[np.ndarray, np.ndarray, float, float]:
        """Grain stretches ``F_g`` (M, 3, 3) and particle means ``F_k`` (N, 3, 3) at state ``t``; ``ea``, ``ec``."""
        ea, ec = lattice_strain(self.protocol["lattice"], float(self.soc[t]), self.protocol["soc"]["min"])
        Fg = grain_stretches(self.Q, float(ea), float(ec))
        if ea == 0 and ec == 0:  # exactly the identity (no rounding noise in a zero protocol)
            return (
                np.broadcast_to(np.eye(3), Fg.shape).copy(),
                np.broadcast_to(np.eye(3), (self.N, 3, 3)).copy(),
                0.0,
                0.0,
            )
        w = self.grain_voxels
        Fk = np.zeros((self.N, 3, 3))
        np.add.at(Fk, self.grain_particle - 1, Fg * w[:, None, None])
        vk = np.bincount(self.grain_particle - 1, weights=w, minlength=self.N)
        Fk = np.where(vk[:, None, None] > 0, Fk / np.maximum(vk, 1)[:, None, None], np.eye(3)[None])
        return Fg, Fk, float(ea), float(ec)

    def rotations(self, t: int) -> np.ndarray:

        s = self.progress(t)
        return Rotation.from_rotvec(self.w_k * s).as_matrix()  # rotation vectors in (z, y, x) components

    def progress(self, t: int) -> float:
        total = self.protocol["cycles"]
        return float(self.cycles[t] / total) if total > 0 else 0.0

    def periodic_part(self, t: int) -> np.ndarray:
        """``v = u − G_t (x − x_c)`` (Z, Y, X, 3) float32 at state ``t`` (finite everywhere)."""

        s = self.progress(t)
        Fg, Fk, _, _ = self.stretches(t)
        R = self.rotations(t)
        A = np.einsum("kij,kjl->kil", R, Fk) - np.eye(3)[None]  # R_k F_k - I
        tk = self.t_k * s
        v = np.zeros(self.shape + (3,), dtype=np.float32)
        if self.field is not None and s > 0:
            v += np.float32(s) * self.field
        vf = v.reshape(-1, 3)
        # grain misfit about each grain's centroid, smoothed inside the active material
        D = np.einsum("kij,kjl->kil", R[self.grain_particle - 1], Fg - Fk[self.grain_particle - 1])
        dev = np.einsum("nij,nj->ni", D[self.gk], self.r - self.r_g[self.gk])
        sigma = self.protocol["lattice"]["junction_vox"]
        dfull = None
        if sigma > 0 and np.any(dev):
            mode = "wrap" if self.periodic else "constant"
            mask = np.zeros(self.shape, np.float32)
            mask.ravel()[self.sel] = 1.0
            wsum = ndimage.gaussian_filter(mask, sigma, mode=mode)
            dfull = np.zeros((len(self.sel), 3), np.float64)
            tmp = np.zeros(self.shape, np.float32)
            for a in range(3):
                tmp.ravel()[self.sel] = dev[:, a]
                sm = ndimage.gaussian_filter(tmp, sigma, mode=mode)
                dfull[:, a] = sm.ravel()[self.sel] / np.maximum(wsum.ravel()[self.sel], 1e-6)
                tmp[...] = 0
            dev = dfull
        own = np.einsum("nij,nj->ni", A[self.pk], self.r) + tk[self.pk] + dev
        vf[self.sel] += own.astype(np.float32)
        # pores/binder near particles follow the nearest particle voxel's particle map
        dev_full = np.zeros((int(np.prod(self.shape)), 3), np.float32)
        dev_full[self.sel] = dev
        bown = np.einsum("nij,nj->ni", A[self.band_pk], self.band_r) + tk[self.band_pk] + dev_full[self.band_src]
        vf[self.band_sel] += bown.astype(np.float32)
        return v

    def crack_at(self, t: int):
        """Crack labels and summaries of state ``t``, built state by state from the reference (ids stay)."""
        if getattr(self, "_crack_cache", None) is None or self._crack_cache[0] > t:
            self._crack_cache = (-1, None, [])
        k, prev, summary = self._crack_cache
        for i in range(k + 1, t + 1):
            prev, summary = crack_volume(
                self.interfaces, self.grain, self.cracks, self.protocol, float(self.cycles[i]), previous=prev
            )
        self._crack_cache = (t, prev, summary)
        return prev.copy(), summary

    def state(self, t: int) -> dict:
        """Labels, displacement, strain and a summary of state ``t``."""
        s = self.progress(t)
        Gt = self.G * s
        v = self.periodic_part(t)
        coords = np.indices(self.shape, dtype=np.float32)
        u = v.copy()
        for a in range(3):
            u[..., a] += sum(np.float32(Gt[a, b]) * (coords[b] - np.float32(self.box_centre[b])) for b in range(3))
        del coords
        crack, summary = self.crack_at(t)
        nmc0 = ((self.phase == 1) & (crack == 0)).astype(np.float32)
        binder0 = (self.phase == 2).astype(np.float32)
        if t == 0:
            idx = None
        else:
            pos = pull_back(v, Gt, self.box_centre, self.periodic)
            idx = nearest_index(pos, self.shape, self.periodic)
            nmc_f = interpolate_at(nmc0, pos, self.periodic)
            binder_f = interpolate_at(binder0, pos, self.periodic)
            del pos
        out = {}
        if idx is None:
            phase, particle, grain, crack_def = self.phase.copy(), self.particle.copy(), self.grain.copy(), crack.copy()
            nmc_f, binder_f = nmc0, binder0
        else:
            inside = idx >= 0
            src = np.where(inside, idx, 0)
            phase = np.where(inside, self.phase.ravel()[src], 0).astype(np.uint8)
            particle = np.where(inside, self.particle.ravel()[src], 0).astype(np.uint32)
            grain = np.where(inside, self.grain.ravel()[src], 0).astype(np.uint32)
            crack_def = np.where(inside, crack.ravel()[src], 0).astype(np.uint32)
        cracked = crack_def > 0
        phase[cracked] = 0
        particle[cracked] = 0
        grain[cracked] = 0
        nmc_now = np.flatnonzero(nmc0.ravel())  # reference NMC voxels still there (not in a crack)
        volume_ratio = _volume_ratio(u, nmc_now) if t > 0 else np.ones(len(nmc_now))
        u[crack > 0] = np.nan
        out["phase"], out["particle"], out["grain"], out["crack"] = phase, particle, grain, crack_def
        out["nmc_fraction"], out["binder_fraction"] = nmc_f, binder_f
        out["displacement"] = u
        out["strain"] = small_strain(u)
        Fg, Fk, ea, ec = self.stretches(t)
        misfit = self._misfit_rms(out["strain"], Fg)
        n0 = int((self.phase == 1).sum())
        out["summary"] = {
            "index": int(t),
            "cycle": float(self.cycles[t]),
            "soc": float(self.soc[t]),
            "progress": s,
            "lattice_strain_a": ea,
            "lattice_strain_c": ec,
            "mean_grain_volume_change": float(np.average(np.linalg.det(Fg) - 1.0, weights=self.grain_voxels))
            if self.grain_voxels.sum()
            else 0.0,
            "nmc_voxels": int((phase == 1).sum()),
            "nmc_volume_change": float((phase == 1).sum() / max(n0, 1) - 1.0),
            "nmc_material_volume_change": float(volume_ratio.sum() / max(n0, 1) - 1.0),
            "cracks": len(summary),
            "crack_voxels": int((crack > 0).sum()),
            "crack_area_um2": float(sum(c["interface_area_vox"] for c in summary) * self.h**2),
            "crack_list": summary,
            "strain_minus_lattice_rms": misfit,
            "max_displacement_vox": float(np.nanmax(np.abs(u))) if u.size else 0.0,
        }
        return out

    def _misfit_rms(self, strain, Fg):
        """rms over the active material of ``sym ∇u − (R F_g − I)`` minus the compaction and rotation parts:
        reported as the rms of ``strain − E_g − E_compaction`` where rotations are ignored (second order)."""
        e = strain.reshape(-1, 6)[self.sel]
        ok = np.all(np.isfinite(e), axis=1)
        E = 0.5 * (Fg + np.swapaxes(Fg, 1, 2)) - np.eye(3)[None]
        Eg = E[self.gk]
        want = np.stack([Eg[:, 0, 0], Eg[:, 1, 1], Eg[:, 2, 2], Eg[:, 0, 1], Eg[:, 0, 2], Eg[:, 1, 2]], 1)
        diff = (e - want)[ok]
        return float(np.sqrt(np.mean(diff**2))) if len(diff) else 0.0


def _max_gradient(f: np.ndarray, periodic: bool) -> float:
    """Largest ``|∂f_a/∂x_b|`` (central differences, wrapped in a periodic box) of a (Z, Y, X, 3) field."""
    worst = 0.0
    for a in range(3):
        for b in range(3):
            if periodic:
                d = 0.5 * (np.roll(f[..., a], -1, axis=b) - np.roll(f[..., a], 1, axis=b))
            else:
                d = np.gradient(f[..., a], axis=b)
            worst = max(worst, float(np.abs(d).max()))
    return worst


def _volume_ratio(u: np.ndarray, flat: np.ndarray) -> np.ndarray:
    """``det(I + ∇u)`` (float64) at the voxels ``flat`` (flat indices) of a finite (Z, Y, X, 3) displacement;
    ``∇u`` by central differences (one-sided at the box faces)."""
    g = [[None] * 3 for _ in range(3)]
    for a in range(3):
        for b, d in enumerate(np.gradient(u[..., a], axis=(0, 1, 2))):
            g[a][b] = d.ravel()[flat].astype(np.float64)  # du_a/dx_b at the voxels
    g[0][0] += 1.0
    g[1][1] += 1.0
    g[2][2] += 1.0
    return (
        g[0][0] * (g[1][1] * g[2][2] - g[1][2] * g[2][1])
        - g[0][1] * (g[1][0] * g[2][2] - g[1][2] * g[2][0])
        + g[0][2] * (g[1][0] * g[2][1] - g[1][1] * g[2][0])
    )


def small_strain(u: np.ndarray) -> np.ndarray:
    """``sym ∇u`` (Z, Y, X, 6) float32, components ``zz, yy, xx, yz, xz, xy`` (central differences, NaN-propagating)."""
    grads = [np.gradient(u[..., a], axis=(0, 1, 2)) for a in range(3)]  # grads[a][b] = du_a/dx_b
    out = np.empty(u.shape[:3] + (6,), dtype=np.float32)
    for c, (a, b) in enumerate(((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))):  # axes z=0, y=1, x=2
        out[..., c] = 0.5 * (grads[a][b] + grads[b][a])
    return out


__all__ = [
    "DEFAULT_PROTOCOL",
    "MAX_STRAIN",
    "NMC811_LATTICE",
    "PROTOCOL_FORMAT",
    "Interfaces",
    "Sequence",
    "crack_volume",
    "lattice_strain",
    "load_protocol",
    "plan_cracks",
    "pull_back",
    "nearest_index",
    "interpolate_at",
    "schedule",
    "small_strain",
    "soc_at",
    "validate_protocol",
]
