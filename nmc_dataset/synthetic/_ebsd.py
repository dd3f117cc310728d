"""Known-truth EBSD sections: slice a known 3D radial GBPD and write instrument-like scans.

* :func:`radial_teacher_gbpd` draws a plausible radially elongated 3D GBPD inside a ball: the
  teacher of the closed-loop tests and of the GAN's synthetic calibration.
* :func:`slice_labels` cuts a GBPD with a plane inside a spherical particle and returns the true
  label image and particle mask.
* :func:`synthetic_scan` turns a label image into a scan (Euler angles, IQ, CI, phase) as an
  instrument would record it: a crystal orientation per grain (drawn from a known texture
  relative to each grain's radial direction, or uniform on SO(3)), orientation noise, low CI
  at grain junctions and at a few random pixels, unindexed pixels (CI = -1, phase 0) outside
  the particle, IQ shading darker at boundaries.

The sample frame of a scan (the frame its Euler angles refer to) is the image frame: x along
the columns, y along the rows (increasing row index), z = x × y; for a section through the
plane with basis ``(u, v, n)`` (:func:`plane_basis`) these are the 3D directions ``u, v, n``.
* :func:`write_synthetic_sections` does all of it for central and off-centre planes and writes
  ``.ang`` / ``.ctf`` files with the true labels beside them.

Coordinates: 3D points ``(x, y, z)`` in EBSD pixels, particle centre at the origin; images are
indexed ``[y, x]``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage

from nmc_dataset._util import as_rng, write_json_atomic
from nmc_dataset.ebsd._orientation import perturb, quat_to_euler, random_quaternions
from nmc_dataset.io._ebsd import write_ang, write_ctf
from nmc_dataset.tessellation._gbpd import DIAG_MIN, GBPD
from nmc_dataset.tessellation._labels import hard_labels

#: Euler angles OIM writes for points it could not index (4π rad).
ANG_UNINDEXED_EULER_RAD = 4.0 * np.pi

#: Seeds outside the particle in :func:`write_synthetic_sections` (about 3 mean seed spacings
#: at the default intensity: the rim grains then have their outer neighbours).
SECTION_TEACHER_MARGIN_PX = 24.0

#: Probabilities of a low-CI pixel at a grain junction, on a two-grain boundary and elsewhere
#: (:func:`synthetic_scan`'s defaults).
LOW_CI_DEFAULT = (0.5, 0.02, 0.003)

#: Instrument presets of ``phantom-ebsd --instrument``: low-CI probabilities (junction, boundary,
#: random), orientation noise per pixel (degrees) and the fraction of grains indexed as their
#: pseudo-symmetric variant (:data:`PSEUDO_SYMMETRY_AXIS_ANGLE`). ``ideal`` indexes every pixel;
#: ``default`` is a good scan (half the junction pixels lost); ``harsh`` loses every junction
#: pixel and 1 % of the others, doubles the noise and misindexes 2 % of the grains.
INSTRUMENTS = {
    "ideal": {"low_ci": (0.0, 0.0, 0.0), "noise_deg": 0.5, "misindex_fraction": 0.0},
    "default": {"low_ci": LOW_CI_DEFAULT, "noise_deg": 0.5, "misindex_fraction": 0.0},
    "harsh": {"low_ci": (1.0, 0.01, 0.01), "noise_deg": 1.0, "misindex_fraction": 0.02},
}

#: The pseudo-symmetry of layered R-3m oxides: a 60° rotation about the crystal c-axis (it maps
#: the trigonal lattice onto itself up to the stacking, so EBSD indexing confuses the two).
PSEUDO_SYMMETRY_AXIS_ANGLE = ((0.0, 0.0, 1.0), np.pi / 3.0)

#: Defaults of :func:`radial_teacher_gbpd` (documented there).
TEACHER_DEFAULTS = {
    "radius_px": 100.0,
    "intensity": 0.0018,
    "radial_diag": (0.15, 0.35),
    "tangential_diag": (0.8, 1.25),
    "offset_range": (1.0, 10.0),
    "margin_px": 0.0,
}


def radial_teacher_gbpd(
    rng,
    radius_px: float = 100.0,
    intensity: float = 0.0018,
    radial_diag=(0.15, 0.35),
    tangential_diag=(0.8, 1.25),
    offset_range=(1.0, 10.0),
    margin_px: float = 0.0,
) -> GBPD:
    """A plausible radially elongated 3D GBPD in a ball: the synthetic "truth" grain model.

    Seeds are a homogeneous Poisson process of ``intensity`` points per px³ in the ball of
    radius ``radius_px + margin_px`` about the origin (the count is Poisson, at least 2). Each
    seed gets, independently and uniformly:

    * a radial diagonal marker ``D_i[0] ~ U(radial_diag)``,
    * two tangential markers ``D_i[1], D_i[2] ~ U(tangential_diag)``,
    * an offset ``r_i ~ U(offset_range)``,
    * a roll angle ``γ_i ~ U[0, π)``.

    With ``D_i[0]`` smaller than the tangential entries a cell extends further along the radial
    direction than across it (aspect about ``sqrt(D_t / D_r)``, ≈ 2 with the defaults), so grains
    point at the centre, as in NMC811 secondary particles. The defaults lie within the docs/method.md#generator
    bounds (``r ∈ [1, 10]``, ``D ∈ [DIAG_MIN, 50]``); the intensity is the paper's initial
    ``μ_1 = 0.0018`` (mean grain volume ≈ 556 px³, i.e. an equivalent diameter of ≈ 10 px =
    0.5 µm at 50 nm pixels).

    Parameters
    ----------
    rng : numpy.random.Generator or int
        Random generator, or a seed for one.
    radius_px : float
        Particle radius in EBSD pixels.
    intensity : float
        Seeds per px³ (μ).
    radial_diag, tangential_diag : (low, high)
        Ranges of the radial and tangential diagonal markers; need ``low >= DIAG_MIN``.
    offset_range : (low, high)
        Range of the offsets ``r_i``.
    margin_px : float
        Extra shell of seeds outside the particle (0: seeds only inside).

    Returns
    -------
    GBPD
        3D, with ``roll`` set.
    """
    rng = as_rng(rng)
    for name, (lo, hi) in (("radial_diag", radial_diag), ("tangential_diag", tangential_diag)):
        if not (DIAG_MIN <= lo <= hi):
            raise ValueError(f"{name} must satisfy {DIAG_MIN} <= low <= high, got {(lo, hi)}")
    if not offset_range[0] <= offset_range[1]:
        raise ValueError(f"offset_range must be (low, high), got {offset_range}")
    if radius_px <= 0 or intensity <= 0:
        raise ValueError("radius_px and intensity must be > 0")
    r_ball = float(radius_px) + float(margin_px)
    n = max(int(rng.poisson(intensity * 4.0 / 3.0 * np.pi * r_ball**3)), 2)
    direction = rng.normal(size=(n, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    seeds = direction * (r_ball * rng.uniform(size=(n, 1)) ** (1.0 / 3.0))
    diag = np.empty((n, 3))
    diag[:, 0] = rng.uniform(*radial_diag, size=n)
    diag[:, 1:] = rng.uniform(*tangential_diag, size=(n, 2))
    offsets = rng.uniform(*offset_range, size=n)
    roll = rng.uniform(0.0, np.pi, size=n)
    return GBPD(seeds, diag, offsets, roll)


def depth_teacher_gbpd(rng, radius_px: float = 100.0, core_diag=(0.8, 1.25), **teacher) -> GBPD:
    """A radial teacher whose grains change with depth: equiaxed at the centre, radial at the rim.

    Draws :func:`radial_teacher_gbpd` (``radius_px`` and ``teacher`` keywords) and then blends
    each seed's radial marker with an equiaxed one by its normalised distance from the centre,
    ``ρ_i = min(|s_i| / radius_px, 1)``: ``D_i[0] ← (1 - ρ_i) c_i + ρ_i D_i[0]`` with
    ``c_i ~ U(core_diag)`` (the tangential range by default, so the core grains are about as
    long radially as across). The truth for models that see depth.
    """
    rng = as_rng(rng)
    g = radial_teacher_gbpd(rng, radius_px=radius_px, **teacher)
    lo, hi = core_diag
    if not DIAG_MIN <= lo <= hi:
        raise ValueError(f"core_diag must satisfy {DIAG_MIN} <= low <= high, got {core_diag}")
    rho = np.minimum(np.linalg.norm(g.seeds, axis=1) / float(radius_px), 1.0)
    diag = g.diag.copy()
    diag[:, 0] = (1.0 - rho) * rng.uniform(lo, hi, size=g.n) + rho * diag[:, 0]
    return GBPD(g.seeds, diag, g.offsets, g.roll)


# --------------------------------------------------------------------------- slicing
def plane_basis(normal) -> np.ndarray:
    """An orthonormal basis ``(u, v, n)`` (rows) of a plane with unit normal ``n``.

    ``u`` is the image's x direction and ``v`` its y direction; for ``n = e_z`` they are
    ``e_x`` and ``e_y``.
    """
    n = np.asarray(normal, dtype=np.float64).reshape(3)
    n = n / np.linalg.norm(n)
    ref = np.array([1.0, 0.0, 0.0]) if abs(n[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    if np.allclose(n, [0, 0, 1]):
        return np.eye(3)
    u = ref - n * (ref @ n)
    u /= np.linalg.norm(u)
    v = np.cross(n, u)
    return np.stack([u, v, n])


@dataclasses.dataclass
class SliceTruth:
    """A true planar section of a 3D GBPD.

    Attributes
    ----------
    labels : (ny, nx) int64 array
        1 + the index of the GBPD cell at each pixel inside the particle, 0 outside.
    mask : (ny, nx) bool array
        Pixels inside the particle.
    center_px : (2,) array
        ``(x, y)`` pixel of the section's centre (the particle centre's projection).
    height_px : float
        Signed distance of the plane from the particle centre.
    normal : (3,) array
        Plane normal.
    """

    labels: np.ndarray
    mask: np.ndarray
    center_px: np.ndarray
    height_px: float
    normal: np.ndarray


def slice_labels(
    g: GBPD, height_px: float, radius_px: float, size_px: int | None = None, normal=(0.0, 0.0, 1.0), mask_fn=None
) -> SliceTruth:
    """Cut the 3D GBPD ``g`` with the plane ``{p : p·n = height_px}`` inside a particle.

    Parameters
    ----------
    g : GBPD
        3D tessellation, particle centre at the origin.
    height_px : float
        Signed distance of the plane from the centre.
    radius_px : float
        Radius of the spherical particle (ignored for the mask when ``mask_fn`` is given).
    size_px : int, optional
        Image width = height (default ``2 * ceil(radius_px) + 9``: the full particle plus a
        border of unindexed pixels).
    normal : (3,) sequence
        Plane normal (any length).
    mask_fn : callable, optional
        ``mask_fn(points (P, 3)) -> bool (P,)``: a non-spherical particle.

    Returns
    -------
    SliceTruth
        The section's true labels and geometry.
    """
    if size_px is None:
        size_px = 2 * int(np.ceil(radius_px)) + 9
    basis = plane_basis(normal)
    c = (size_px - 1) / 2.0
    yy, xx = np.mgrid[0:size_px, 0:size_px].astype(np.float64)
    pts = ((xx - c)[..., None] * basis[0] + (yy - c)[..., None] * basis[1] + float(height_px) * basis[2]).reshape(-1, 3)
    mask = (np.linalg.norm(pts, axis=1) <= radius_px) if mask_fn is None else np.asarray(mask_fn(pts), bool)
    labels = np.zeros(len(pts), dtype=np.int64)
    if mask.any():
        labels[mask] = hard_labels(g, pts[mask]) + 1
    shape = (size_px, size_px)
    return SliceTruth(labels.reshape(shape), mask.reshape(shape), np.array([c, c]), float(height_px), basis[2].copy())


# --------------------------------------------------------------------------- scans
def boundary_counts(labels: np.ndarray) -> np.ndarray:
    """Number of distinct non-zero labels in each pixel's 3×3 neighbourhood (itself included)."""
    lab = np.asarray(labels, dtype=np.int64)
    ny, nx = lab.shape
    pad = np.pad(lab, 1, mode="constant")
    stack = np.stack([pad[1 + dy : 1 + dy + ny, 1 + dx : 1 + dx + nx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
    stack = np.sort(stack, axis=0)
    distinct = (stack[0] > 0).astype(np.int64) + np.sum((stack[1:] != stack[:-1]) & (stack[1:] > 0), axis=0)
    return distinct


@dataclasses.dataclass
class SyntheticScan:
    """Instrument-like EBSD channels of a known section.

    Attributes
    ----------
    euler_rad : (ny, nx, 3) array
        Bunge angles (4π for unindexed points, as OIM writes).
    ci, iq : (ny, nx) arrays
        Confidence index (-1 outside the particle) and image quality.
    phase : (ny, nx) int array
        1 inside the particle, 0 outside.
    grain_quat : (n + 1, 4) array
        The true orientation of each label (row 0 unused).
    low_ci : (ny, nx) bool
        Pixels given a low CI (and a random orientation): junctions and random points.
    misindexed : (n + 1,) bool, optional
        Labels recorded as their pseudo-symmetric variant (row 0 unused).
    """

    euler_rad: np.ndarray
    ci: np.ndarray
    iq: np.ndarray
    phase: np.ndarray
    grain_quat: np.ndarray
    low_ci: np.ndarray
    misindexed: np.ndarray | None = None


def synthetic_scan(
    labels: np.ndarray,
    mask: np.ndarray,
    rng,
    noise_deg: float = 0.5,
    junction_low_ci: float = LOW_CI_DEFAULT[0],
    boundary_low_ci: float = LOW_CI_DEFAULT[1],
    random_low_ci: float = LOW_CI_DEFAULT[2],
    low_ci_max: float = 0.05,
    texture=None,
    radial=None,
    misindex_fraction: float = 0.0,
) -> SyntheticScan:
    """Turn a true label image into EBSD channels as an instrument records them.

    Parameters
    ----------
    labels : (ny, nx) int array
        True grains (0 outside the particle).
    mask : (ny, nx) bool array
        Particle section (indexed region).
    rng : numpy.random.Generator or int
        Random generator, or a seed for one.
    noise_deg : float
        Orientation noise: each pixel is rotated by a random rotation vector ~ N(0, σ² I₃), σ in degrees.
    junction_low_ci : float
        Probability that a pixel at a grain junction (≥ 3 grains in its 3×3 neighbourhood) gets a
        low CI.
    boundary_low_ci : float
        Same for pixels on a two-grain boundary.
    random_low_ci : float
        Same for any other pixel of the particle.
    low_ci_max : float
        Low CI values are ~ U(0, low_ci_max) (below the usual 0.1 threshold); good points get
        CI ~ 0.2 + 0.8 Beta(5, 2).
    texture : OrientationModel, optional
        Grain orientations are drawn from this texture relative to ``radial`` (default: uniform
        on SO(3)). Either way the same random numbers are consumed (3 uniforms per grain), so
        the labels, noise and CI of a scan do not depend on the texture.
    radial : (n, 3) array, optional
        Radial direction of grain ``k`` (row ``k - 1``) in the sample frame; needed with ``texture``.
    misindex_fraction : float
        Each grain is, with this probability, recorded as its pseudo-symmetric variant
        ``P ⊗ q`` (:data:`PSEUDO_SYMMETRY_AXIS_ANGLE`) over all its pixels, as indexing that
        confuses the two solutions does; ``grain_quat`` keeps the true orientation. With 0 no
        random number is drawn for it.

    Returns
    -------
    SyntheticScan
        The EBSD channels of the section.
    """

    rng = as_rng(rng)
    labels = np.asarray(labels, dtype=np.int64)
    mask = np.asarray(mask, dtype=bool)
    ny, nx = labels.shape
    n = int(labels.max())
    if texture is None:
        grain_q = np.vstack([[1.0, 0, 0, 0], random_quaternions(rng, n)])
    else:
        from scipy.spatial.transform import Rotation

        if radial is None or np.shape(radial) != (n, 3):
            raise ValueError(f"a texture needs the radial direction of each of the {n} grains, shape ({n}, 3)")
        g = texture.orientations(np.asarray(radial, dtype=np.float64), rng.uniform(size=(3, n)))
        grain_q = np.vstack([[1.0, 0, 0, 0], Rotation.from_matrix(g).as_quat(canonical=True, scalar_first=True)])
    measured_q, misindexed = grain_q, None
    if misindex_fraction > 0:
        from nmc_dataset.ebsd._orientation import axis_angle_to_quat, qmul

        misindexed = np.concatenate([[False], rng.uniform(size=n) < float(misindex_fraction)])
        axis, angle = PSEUDO_SYMMETRY_AXIS_ANGLE
        measured_q = grain_q.copy()
        measured_q[misindexed] = qmul(axis_angle_to_quat(np.array(axis), angle), grain_q[misindexed])
    q = perturb(measured_q[labels], rng, np.radians(noise_deg))
    nb = boundary_counts(labels)
    p_low = np.where(nb >= 3, junction_low_ci, np.where(nb == 2, boundary_low_ci, random_low_ci))
    low = mask & (rng.uniform(size=(ny, nx)) < p_low)
    q[low] = random_quaternions(rng, int(low.sum()))
    euler = quat_to_euler(q)
    euler[~mask] = ANG_UNINDEXED_EULER_RAD
    ci = 0.2 + 0.8 * rng.beta(5.0, 2.0, size=(ny, nx))
    ci[low] = rng.uniform(0.0, low_ci_max, size=int(low.sum()))
    ci[~mask] = -1.0
    base = rng.uniform(1500.0, 3000.0, size=n + 1)
    edge = ndimage.gaussian_filter((nb >= 2).astype(float), 1.0)
    iq = base[labels] * (1.0 - 0.6 * np.clip(edge * 2.0, 0, 1)) * rng.normal(1.0, 0.05, size=(ny, nx))
    iq[low] *= 0.5
    iq[~mask] = rng.uniform(20.0, 80.0, size=int((~mask).sum()))
    phase = mask.astype(np.int64)
    return SyntheticScan(euler, ci, np.maximum(iq, 0.0), phase, grain_q, low, misindexed)


def write_scan(path, scan: SyntheticScan, step_um: float, ctf_min_ci: float = 0.1) -> Path:
    """Write a :class:`SyntheticScan` as ``.ang`` or ``.ctf`` (by suffix).

    ``.ctf`` has no CI: pixels with CI < ``ctf_min_ci`` are written as not indexed (phase 0,
    Error 3), as Oxford software records zero solutions.

    Parameters
    ----------
    path : path-like
        Output file, ``.ang`` or ``.ctf``.
    scan : SyntheticScan
        The synthetic map (Euler angles, CI, IQ, phase).
    step_um : float
        Step size in µm.
    ctf_min_ci : float, default 0.1
        ``.ctf`` only: smallest CI written as indexed.

    Returns
    -------
    Path
        The file written.
    """

    path = Path(path)
    if path.suffix.lower() == ".ang":
        return write_ang(path, scan.euler_rad, scan.ci, scan.iq, scan.phase, step_um)
    if path.suffix.lower() == ".ctf":
        ph = np.where(scan.ci >= ctf_min_ci, scan.phase, 0)
        bc = np.clip(np.round(scan.iq / 3000.0 * 255.0), 0, 255).astype(np.int64)
        return write_ctf(path, scan.euler_rad, ph, step_um, bc=np.where(ph > 0, bc, 0))
    raise ValueError(f"unknown scan suffix {path.suffix!r} (.ang or .ctf)")


def write_synthetic_sections(
    out,
    rng,
    n_central: int = 2,
    n_off_center: int = 2,
    radius_px: float = 100.0,
    step_um: float = 0.05,
    formats=("ang",),
    central_max_frac: float = 0.05,
    off_center_frac=(0.5, 0.75),
    size_px: int | None = None,
    noise_deg: float = 0.5,
    teacher: dict | None = None,
    low_ci=None,
    texture="default",
    misindex_fraction: float = 0.0,
) -> list[dict]:
    """Slice fresh teacher particles and write their scans with the true labels beside them.

    Section ``k`` is cut from its own particle (:func:`radial_teacher_gbpd` with ``teacher``
    keyword overrides and ``radius_px``; seeds also fill a ``margin_px`` = 24 px shell outside
    the particle unless ``teacher`` says otherwise, so that the grains inside are a restriction
    of one stationary radial tessellation, as the grain model builds particles: shell ∩ grains)
    through a plane with a uniformly random normal, at a height ``|h| <= central_max_frac * R`` for the
    ``n_central`` central sections and
    ``|h| ∈ off_center_frac * R`` for the off-centre ones.

    Writes ``<out>/synthetic_<k>.<fmt>`` per format (the formats alternate when several are
    given: section k gets ``formats[k % len(formats)]``), ``<out>/truth/synthetic_<k>.tif``
    (uint32 true labels) and ``<out>/truth/truth.json`` (heights, normals, centres, central
    flags). ``noise_deg`` and ``low_ci`` = ``(junction, boundary, random)`` probabilities of a
    low-CI pixel set the instrument (:func:`synthetic_scan`; default ``LOW_CI_DEFAULT``;
    ``(0, 0, 0)`` is an ideal instrument that indexes every pixel); ``misindex_fraction`` of
    the grains are recorded as their pseudo-symmetric variant (:func:`synthetic_scan`).
    :data:`INSTRUMENTS` holds the three presets of these settings.

    ``texture`` sets the grains' crystal orientations relative to their radial direction (the
    direction of their seed from the particle centre): an
    :class:`~nmc_dataset.ebsd._orientation_model.OrientationModel`, ``"default"`` (the
    realistic radial texture ``OrientationModel()``: c-axis perpendicular to the radial
    direction, κ = -8, λ = 0) or ``None`` / ``"random"`` (uniform on SO(3), as before textures
    existed). Recorded in ``truth.json``.

    Parameters
    ----------
    out : path-like
        Output folder (created).
    rng : numpy.random.Generator or int or None
        Random generator, or a seed for one.
    n_central : int, default 2
        Central sections.
    n_off_center : int, default 2
        Off-centre sections.
    radius_px : float, default 100.0
        Particle radius in pixels (unless ``teacher`` sets ``radius_px``).
    step_um : float, default 0.05
        Scan step (pixel size) in µm.
    formats : sequence of {"ang", "ctf"}, default ("ang",)
        Scan formats, alternating over the sections.
    central_max_frac : float, default 0.05
        Largest ``|h| / R`` of a central section.
    off_center_frac : tuple of 2 floats, default (0.5, 0.75)
        Range of ``|h| / R`` of the off-centre sections.
    size_px : int, optional
        Edge length of the square scans in pixels (default ``2 ceil(R) + 9``).
    noise_deg : float, default 0.5
        Orientation noise (degrees) of the instrument.
    teacher : dict, optional
        Keyword overrides of :func:`radial_teacher_gbpd`.
    low_ci : tuple of 3 floats, optional
        ``(junction, boundary, random)`` probabilities of a low-CI pixel (default ``LOW_CI_DEFAULT``).
    texture : OrientationModel or {"default", "random"} or None, default "default"
        Crystal orientations of the grains relative to their radial direction.
    misindex_fraction : float, default 0.0
        Probability in [0, 1] that a grain is recorded as its pseudo-symmetric variant over all its
        pixels (:func:`synthetic_scan`); the truth keeps the true orientation.

    Returns
    -------
    list of dict
        One record per section: ``id, scan, truth, height_px, normal, center_px, central``.
    """

    rng = as_rng(rng)
    low_ci = LOW_CI_DEFAULT if low_ci is None else tuple(float(v) for v in low_ci)
    if len(low_ci) != 3 or not all(0.0 <= v <= 1.0 for v in low_ci):
        raise ValueError(f"low_ci must be three probabilities (junction, boundary, random), got {low_ci}")
    if not 0.0 <= misindex_fraction <= 1.0:
        raise ValueError(f"misindex_fraction must be in [0, 1], got {misindex_fraction}")
    out = Path(out)
    (out / "truth").mkdir(parents=True, exist_ok=True)
    teacher = dict(teacher or {})
    teacher.setdefault("radius_px", radius_px)
    teacher.setdefault("margin_px", SECTION_TEACHER_MARGIN_PX)
    radius_px = float(teacher["radius_px"])
    if isinstance(texture, str):
        if texture not in ("default", "random"):
            raise ValueError(f"texture must be an OrientationModel, 'default', 'random' or None, got {texture!r}")
        if texture == "default":
            from nmc_dataset.ebsd._orientation_model import OrientationModel

            texture = OrientationModel()
        else:
            texture = None
    records = []
    kinds = [True] * int(n_central) + [False] * int(n_off_center)
    for k, central in enumerate(kinds):
        g = radial_teacher_gbpd(rng, **teacher)
        normal = rng.normal(size=3)
        normal /= np.linalg.norm(normal)
        if central:
            h = rng.uniform(-central_max_frac, central_max_frac) * radius_px
        else:
            h = rng.uniform(*off_center_frac) * radius_px * rng.choice([-1.0, 1.0])
        truth = slice_labels(g, h, radius_px, size_px=size_px, normal=normal)
        radial = None
        if texture is not None:  # seed directions of the labels, in the section's sample frame (u, v, n)
            from nmc_dataset.ebsd._orientation_model import radial_directions

            nlab = int(truth.labels.max())
            radial = radial_directions(g.seeds[:nlab] @ plane_basis(normal).T)
        scan = synthetic_scan(
            truth.labels,
            truth.mask,
            rng,
            noise_deg=noise_deg,
            junction_low_ci=low_ci[0],
            boundary_low_ci=low_ci[1],
            random_low_ci=low_ci[2],
            texture=texture,
            radial=radial,
            misindex_fraction=misindex_fraction,
        )
        fmt = formats[k % len(formats)]
        sid = f"synthetic_{k:02d}"
        scan_path = write_scan(out / f"{sid}.{fmt}", scan, step_um)
        truth_path = out / "truth" / f"{sid}.tif"
        tifffile.imwrite(truth_path, truth.labels.astype(np.uint32))
        records.append(
            {
                "id": sid,
                "scan": scan_path.name,
                "truth": f"truth/{truth_path.name}",
                "height_px": float(h),
                "normal": [float(v) for v in normal],
                "center_px": [float(v) for v in truth.center_px],
                "central": bool(central),
                "radius_px": radius_px,
                "step_um": float(step_um),
                "n_cells": int(g.n),
            }
        )
    tex = (
        None
        if texture is None
        else {
            "model": "radial-ipf-exponential",
            "kappa": float(texture.kappa),
            "lambda": float(texture.lam),
            "radial_direction": "seed direction",
        }
    )
    instrument = {"low_ci": list(low_ci), "noise_deg": float(noise_deg), "misindex_fraction": float(misindex_fraction)}
    write_json_atomic(
        out / "truth" / "truth.json",
        {
            "format": "nmc-dataset/synthetic-ebsd-truth",
            "format_version": 1,
            "texture": tex,
            "instrument": instrument,
            "sections": records,
        },
    )
    return records


__all__ = [
    "LOW_CI_DEFAULT",
    "INSTRUMENTS",
    "PSEUDO_SYMMETRY_AXIS_ANGLE",
    "TEACHER_DEFAULTS",
    "depth_teacher_gbpd",
    "radial_teacher_gbpd",
    "plane_basis",
    "SliceTruth",
    "slice_labels",
    "boundary_counts",
    "SyntheticScan",
    "synthetic_scan",
    "write_scan",
    "write_synthetic_sections",
]
