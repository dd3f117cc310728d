"""Multi-scale particle assembly (docs/method.md#particle-assembly).

A particle is an outer shell (a star-shaped body given by spherical-harmonic coefficients of
its radius function) partitioned by a grain architecture (a 3D GBPD). Both are drawn
*independently* from their models and put in one frame:

* lengths in µm; the shell's star point (the origin of its radius function) is the origin of
  the tessellation (the particle centre);
* the GBPD stays in the grain model's pixels (``pixel_size_um`` µm each):
  ``x_px = x_um / pixel_size_um``;
* **selection**: the centre of mass of every GBPD cell is computed on an *assembly lattice*
  (spacing ``spacing_px`` pixels, anchored at the origin, covering the shell's bounding box
  enlarged by ``margin_px``). A cell is kept iff its centre of mass lies inside the shell.
  The error of a lattice centre of mass is a fraction of the spacing (halving a 1 px spacing
  moves the centres of mass of ~10 px grains by ~0.1 px, at most ~0.4 px; see the tests); only
  cells whose centre of mass lies that close to the shell surface could flip. Cells with no lattice point (smaller than
  about one assembly voxel) are dropped; cells reaching out of the lattice box (which lies
  ``margin_px`` outside the shell) use their part inside it.
* **partition**: the particle is the shell body partitioned by the GBPD *of the kept seeds*
  (the space of removed cells goes to their kept neighbours), clipped by the shell.

Everything needed to rebuild the particle is in :class:`Particle` (SH coefficients, the kept
seeds and markers, the pixel size): :func:`nmc_dataset.particles._voxelize.voxelize` of a
particle read back from the params table gives the same voxels, bit for bit. Alternatively the
particle is re-drawn from its seed with the same models (:func:`make_particle`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from nmc_dataset._util import item_seed
from nmc_dataset.ebsd._orientation_model import radial_directions
from nmc_dataset.particles._voxelize import gbpd_grid_labels, inside_shell, lattice_grid, shell_extent
from nmc_dataset.shells._harmonics import radius
from nmc_dataset.tessellation._gbpd import GBPD

#: Stream numbers of ``_util.item_seed`` for particles (shell and grains are spawned from it).
PARTICLE_STREAM = 7


@dataclasses.dataclass(frozen=True)
class Particle:
    """An analytic multi-scale particle.

    Parameters
    ----------
    particle_id : int
        Index of the particle in its run.
    coeffs_um : (K,) float array
        SH coefficients of the shell radius in µm (index ``l*l + l + m``, no Condon–Shortley
        phase; see ``nmc_dataset.shells._harmonics``).
    grains : GBPD
        The kept grains (3D, grain-model pixels, particle centre at the origin).
    pixel_size_um : float
        Size of one GBPD length unit in µm.
    kept_index : (n,) int array
        Index of each kept grain among the ``n_drawn`` drawn seeds.
    n_drawn : int
        Number of seeds the grain model drew.
    seed_entropy : int or None
        Entropy of the particle's ``numpy.random.SeedSequence`` (with ``seed_spawn_key``).
    seed_spawn_key : tuple of int
        Spawn key of that SeedSequence.
    shell_model_id, grain_model_id : str
        Identify the models (format version + content hash), for re-drawing from the seed.
    spacing_px, margin_px : float
        Assembly lattice used for the centre-of-mass selection.
    com_px : (n, 3) float array
        Lattice centres of mass ``(x, y, z)`` of the kept cells *before* removal of the others
        (pixels); the selection criterion.
    orientations_wxyz : (n, 4) float array or None
        Crystal orientation of each grain (row ``k - 1`` for label ``k``): the unit quaternion
        ``(w, x, y, z)``, ``w >= 0``, of the *active* rotation taking crystal axes (x ∥ a1,
        z ∥ c) to the particle frame (x, y, z in µm); its matrix's columns are the crystal
        axes in particle coordinates. ``None`` when no orientation model was given.
    orientation_model_id : str
        Identifies the orientation model (empty without one).
    """

    particle_id: int
    coeffs_um: np.ndarray
    grains: GBPD
    pixel_size_um: float
    kept_index: np.ndarray
    n_drawn: int
    seed_entropy: int | None = None
    seed_spawn_key: tuple = ()
    shell_model_id: str = ""
    grain_model_id: str = ""
    spacing_px: float = 1.0
    margin_px: float = 8.0
    com_px: np.ndarray | None = None
    orientations_wxyz: np.ndarray | None = None
    orientation_model_id: str = ""

    @property
    def n_grains(self) -> int:
        """Number of kept grains (labels ``1..n_grains``)."""
        return self.grains.n

    @property
    def degree(self) -> int:
        """SH degree ``L`` of the shell."""
        return int(round(np.sqrt(len(self.coeffs_um)))) - 1


def grain_window_px(coeffs_um: np.ndarray, pixel_size_um: float, margin_px: float = 8.0):
    """Box ``(lo, hi)`` in grain pixels that the grain model must cover for this shell."""
    _, rmax, lo, hi = shell_extent(coeffs_um)
    slack = 0.02 * rmax + margin_px * pixel_size_um
    return (lo - slack) / pixel_size_um, (hi + slack) / pixel_size_um


def cell_centres_of_mass(
    g: GBPD, coeffs_um: np.ndarray, pixel_size_um: float, spacing_px: float = 1.0, margin_px: float = 8.0
):
    """Lattice centres of mass of all GBPD cells in the shell's enlarged bounding box.

    Parameters
    ----------
    g : GBPD
        3D grain architecture in pixels (particle centre at the origin).
    coeffs_um : (K,) float array
        Shell SH coefficients in µm.
    pixel_size_um : float
        µm per GBPD pixel.
    spacing_px : float, default 1.0
        Spacing of the counting lattice, in pixels.
    margin_px : float, default 8.0
        Margin (pixels) added to the shell's bounding box (itself enlarged by 2 % of the largest radius).

    Returns
    -------
    com_px : (N, 3) array
        ``(x, y, z)`` in pixels (NaN for cells without lattice points).
    count : (N,) int array
        Lattice points per cell.
    """
    p = float(pixel_size_um)
    _, rmax, lo, hi = shell_extent(coeffs_um)
    slack = 0.02 * rmax + margin_px * p
    grid = lattice_grid(lo - slack, hi + slack, spacing_px * p, pad=0)
    lab = gbpd_grid_labels(g, grid, p).ravel()
    n = g.n
    count = np.bincount(lab, minlength=n)
    com = np.full((n, 3), np.nan)
    nzc = count > 0
    nz, ny, nx = grid.shape
    for a, (axis_len, unravel) in enumerate(((nx, 2), (ny, 1), (nz, 0))):
        coord = grid.axis_coords_um("xyz"[a]) / p
        shape = [1, 1, 1]
        shape[unravel] = axis_len
        w = np.broadcast_to(coord.reshape(shape), grid.shape).ravel()
        s = np.bincount(lab, weights=w, minlength=n)
        com[nzc, a] = s[nzc] / count[nzc]
    return com, count


def assemble(
    coeffs_um,
    g: GBPD,
    pixel_size_um: float,
    *,
    particle_id: int = 0,
    spacing_px: float = 1.0,
    margin_px: float = 8.0,
    seed_entropy=None,
    seed_spawn_key=(),
    shell_model_id: str = "",
    grain_model_id: str = "",
) -> Particle:
    """Put a shell and a grain architecture together (docs/method.md#particle-assembly).

    Parameters
    ----------
    coeffs_um : (K,) array
        Shell radius SH coefficients in µm.
    g : GBPD
        3D grain architecture in pixels (centre at the origin) covering the shell.
    pixel_size_um : float
        Grain pixel size in µm.
    particle_id : int, default 0
        Index of the particle in its run.
    spacing_px, margin_px : float
        Assembly lattice spacing and box margin (pixels) for the centres of mass.
    seed_entropy : int, optional
        Entropy of the particle's ``numpy.random.SeedSequence``, recorded for re-drawing.
    seed_spawn_key : tuple of int, default ()
        Spawn key of that SeedSequence.
    shell_model_id, grain_model_id : str, default ""
        Identifiers (format version + content hash) of the models the shell and grains came from.

    Returns
    -------
    Particle
        With the grains whose lattice centre of mass lies inside the shell.
    """
    coeffs_um = np.ascontiguousarray(coeffs_um, dtype=np.float64)
    if g.dim != 3:
        raise ValueError("the grain architecture must be 3D")
    com, count = cell_centres_of_mass(g, coeffs_um, pixel_size_um, spacing_px, margin_px)
    keep = count > 0
    keep[keep] = inside_shell(coeffs_um, com[keep] * pixel_size_um)
    kept = np.flatnonzero(keep)
    return Particle(
        particle_id=int(particle_id),
        coeffs_um=coeffs_um,
        grains=g.subset(kept),
        pixel_size_um=float(pixel_size_um),
        kept_index=kept,
        n_drawn=g.n,
        seed_entropy=seed_entropy,
        seed_spawn_key=tuple(int(k) for k in seed_spawn_key),
        shell_model_id=shell_model_id,
        grain_model_id=grain_model_id,
        spacing_px=float(spacing_px),
        margin_px=float(margin_px),
        com_px=com[kept],
    )


def particle_seed(recipe_seed: int, index: int) -> np.random.SeedSequence:
    """The SeedSequence of particle ``index`` of a run seeded with ``recipe_seed``.

    Parameters
    ----------
    recipe_seed : int
        The run's seed.
    index : int
        Particle index in the run.

    Returns
    -------
    numpy.random.SeedSequence
        Depends on the seed and the index alone (spawn key ``(particle stream, index)``), not on worker count or order.
    """

    return item_seed(recipe_seed, index, PARTICLE_STREAM)


def make_particle(
    shell_model,
    grain_model,
    seed_seq,
    *,
    particle_id: int = 0,
    spacing_px: float = 1.0,
    margin_px: float = 8.0,
    shell_model_id: str = "",
    grain_model_id: str = "",
    orientation_model=None,
) -> Particle:
    """Draw a shell and a grain architecture independently and assemble them.

    Parameters
    ----------
    shell_model : nmc_dataset.shells._model.ShellModel
        ``.sample_coefficients(1, rng)`` (voxel units) and ``.voxel_size_um``.
    grain_model : nmc_dataset.calibration._model.GrainModel
        ``.sample(rng, lo, hi)`` (pixels) and ``.pixel_size_um``.
    seed_seq : numpy.random.SeedSequence or int
        The particle's seed; its two children drive the shell and the grains (so each scale
        is independent of the other model's consumption of random numbers).
    particle_id : int
        Index of the particle in its run (stored in the particle).
    spacing_px, margin_px : float
        Assembly lattice (see :func:`assemble`).
    shell_model_id, grain_model_id : str
        Stored in the particle to identify the models.
    orientation_model : OrientationModel or False, optional
        Draws a crystal orientation per grain (:func:`draw_orientations`) from the particle's
        third child stream, so the shell and grains are the same with or without it. Default:
        the grain model's own ``orientation_model`` attribute (set by
        ``nmc_dataset.pipeline.load_grain_model`` when ``orientation_model.json`` lies beside the
        grain model), if any; ``False`` draws none.

    Returns
    -------
    Particle
        The assembled particle (shell in µm, kept grains in pixels).
    """
    if not isinstance(seed_seq, np.random.SeedSequence):
        seed_seq = np.random.SeedSequence(int(seed_seq))
    if orientation_model is None:
        orientation_model = getattr(grain_model, "orientation_model", None)
    shell_ss, grain_ss = _children(seed_seq)
    coeffs = np.asarray(shell_model.sample_coefficients(1, np.random.default_rng(shell_ss)), dtype=np.float64)
    coeffs_um = coeffs.reshape(-1) * float(shell_model.voxel_size_um)
    p = float(grain_model.pixel_size_um)
    lo, hi = grain_window_px(coeffs_um, p, margin_px)
    if getattr(grain_model, "depth_aware", False):
        # a depth-aware model sees each seed's distance from the centre over the shell's radius in
        # the seed's direction (pixels), so the rim is rho = 1 all around a non-spherical particle
        def shell_radius_px(u):
            return np.asarray(radius(coeffs_um, u)) / p

        g = grain_model.sample(np.random.default_rng(grain_ss), lo, hi, radius=shell_radius_px)
    else:
        g = grain_model.sample(np.random.default_rng(grain_ss), lo, hi)
    part = assemble(
        coeffs_um,
        g,
        p,
        particle_id=particle_id,
        spacing_px=spacing_px,
        margin_px=margin_px,
        seed_entropy=seed_seq.entropy,
        seed_spawn_key=seed_seq.spawn_key,
        shell_model_id=shell_model_id,
        grain_model_id=grain_model_id,
    )
    if orientation_model:
        part = draw_orientations(part, orientation_model, _children(seed_seq, 3)[2])
    return part


def grain_radial_directions(particle: Particle) -> np.ndarray:
    """Unit radial direction of each grain (n, 3): towards its assembly centre of mass (its seed
    where that is missing or at the centre)."""

    com = particle.com_px if particle.com_px is not None else particle.grains.seeds
    return radial_directions(com, fallback=particle.grains.seeds)


def draw_orientations(particle: Particle, orientation_model, seed_seq) -> Particle:
    """The particle with a crystal orientation per grain drawn from ``orientation_model``.

    Parameters
    ----------
    particle : Particle
    orientation_model : nmc_dataset.ebsd._orientation_model.OrientationModel
        Texture relative to each grain's radial direction (:func:`grain_radial_directions`).
    seed_seq : numpy.random.SeedSequence or int
        The orientation stream (``make_particle`` uses the particle seed's third child).

    Returns
    -------
    Particle
        A copy with ``orientations_wxyz`` (n, 4) and ``orientation_model_id`` set.
    """
    rng = np.random.default_rng(seed_seq)
    q = orientation_model.sample(rng, grain_radial_directions(particle))
    return dataclasses.replace(
        particle, orientations_wxyz=q, orientation_model_id=getattr(orientation_model, "model_id", "")
    )


def _children(ss: np.random.SeedSequence, n: int = 2):
    """The first ``n`` children of ``ss`` (as ``ss.spawn(n)`` would give on a fresh sequence,
    but without mutating ``ss``): 0 = shell, 1 = grains, 2 = crystal orientations."""
    return [np.random.SeedSequence(ss.entropy, spawn_key=ss.spawn_key + (i,), pool_size=ss.pool_size) for i in range(n)]


__all__ = [
    "Particle",
    "assemble",
    "make_particle",
    "particle_seed",
    "grain_window_px",
    "cell_centres_of_mass",
    "draw_orientations",
    "grain_radial_directions",
    "PARTICLE_STREAM",
]
