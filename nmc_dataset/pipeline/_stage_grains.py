"""Recipe section ``grains:``: calibrate the grain model on fitted 2D tessellations.

Reads the tessellation folder (``grains.tessellations`` or the ``sections`` section's output,
``ctx.outputs["tessellations"]``), trains (resuming from a checkpoint in the model folder when
there is one), writes the model folder and records ``ctx.outputs["grain_model"]``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nmc_dataset._util import log
from nmc_dataset.calibration._descriptors import describe_grains
from nmc_dataset.calibration._fit2d import read_tessellations
from nmc_dataset.calibration._model import GrainModel
from nmc_dataset.ebsd._morphology import (
    CENTRALITY_THRESHOLD,  # a fitted section below it is not central
    section_centrality,
)
from nmc_dataset.errors import InputError, RecipeError

#: relative tolerance for "the same pixel size" across sections
PIXEL_SIZE_RTOL = 1e-6


def check_section(cfg: dict, where="grains") -> None:
    """Checks the JSON Schema cannot express (``a < b`` bounds, grid vs discriminator depth).

    ``where`` is a location string or the recipe run's ``RunContext`` (pre-flight call).

    Raises
    ------
    RecipeError
        Naming the key, e.g. ``grains.generator.r_bounds``.
    """
    where = getattr(where, "recipe_path", where)
    gen = cfg.get("generator", {})
    for key in ("r_bounds", "diag_bounds"):
        if key in gen:
            a, b = gen[key]
            if not a < b:
                raise RecipeError(f"grains.generator.{key}: bounds need a < b, got [{a}, {b}]", where)
    grid = cfg.get("cutouts", {}).get("grid", 32)
    blocks = cfg.get("discriminator", {}).get("blocks", 3)
    if grid % (2**blocks):
        raise RecipeError(
            f"grains.cutouts.grid: {grid} must be divisible by 2**discriminator.blocks = {2**blocks}", where
        )
    channels = cfg.get("cutouts", {}).get("channels", 12)
    if channels < 1:
        raise RecipeError("grains.cutouts.channels must be >= 1", where)


def load_fits(folder, with_sections: bool = False) -> tuple:
    """Read fitted 2D tessellations for training.

    With ``with_sections`` a fourth value is returned: the central ``fit2d.SectionFit`` objects
    themselves (their label images and masks, for descriptor comparisons).

    Returns
    -------
    fits : list of GBPD (2D, pixels, centre origin)
    pixel_size_um : float
    source : dict
        Folder and section ids (recorded in the model).

    Raises
    ------
    InputError
        Missing folder, no (central) tessellation, or sections with different pixel sizes.
    """

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("not a folder of fitted tessellations (run fit-sections first)", folder)
    fits = list(read_tessellations(folder))
    fits = [f for f in fits if getattr(f, "central", True)]
    if not fits:
        raise InputError(
            "no central section's tessellation found; calibration needs sections through the "
            "particle centre (import-ebsd --central ...)",
            folder,
        )
    sizes = np.array([float(f.pixel_size_um) for f in fits])
    if np.any(np.abs(sizes - sizes[0]) > PIXEL_SIZE_RTOL * sizes[0]):
        detail = ", ".join(f"{f.section_id}: {f.pixel_size_um:g} µm" for f in fits[:6])
        raise InputError(
            f"tessellations have different pixel sizes ({detail}); resample them to one pixel "
            "size or calibrate them separately",
            folder,
        )
    gbpds = []
    for f in fits:
        g = f.gbpd
        if g.dim != 2 or g.n == 0:
            raise InputError(f"section {f.section_id}: expected a non-empty 2D tessellation", folder)
        gbpds.append(g)
    scores = centrality_scores(fits)
    central = [bool(np.isfinite(s) and s >= CENTRALITY_THRESHOLD) for s in scores]
    if not any(central):
        detail = ", ".join(f"{f.section_id}: {s:.2f}" for f, s in list(zip(fits, scores))[:6])
        raise InputError(
            f"none of the {len(fits)} tessellations looks like a section through the particle centre "
            f"(centrality scores {detail}; central sections score >= {CENTRALITY_THRESHOLD}); the "
            "calibration needs central sections",
            folder,
        )
    for f, s, c in zip(fits, scores, central):
        if not c:
            log.warning(
                "%s: section %s scores %.2f (< %.2f): it may not pass through the particle centre",
                folder,
                f.section_id,
                s,
                CENTRALITY_THRESHOLD,
            )
    source = {
        "tessellations": str(folder),
        "sections": [str(f.section_id) for f in fits],
        "centrality_scores": [None if not np.isfinite(s) else float(s) for s in scores],
        "min_radius_px": min(f.radius_px for f in fits),
    }
    if with_sections:
        return gbpds, float(sizes[0]), source, fits
    return gbpds, float(sizes[0]), source


def warn_if_cutouts_leave_sections(cfg, source: dict) -> None:
    """Log a warning when cutouts can reach outside the smallest section.

    Outside its particle a fitted tessellation is an unconstrained extrapolation, so cutouts
    there show the discriminator cells no measurement supports: keep
    ``p_max_px + (grid - 1) / sqrt(2)`` within the section radius.
    """
    r = source.get("min_radius_px")
    reach = float(cfg.cutouts.p_max_px) + (cfg.cutouts.grid - 1) / np.sqrt(2.0)
    if r is not None and reach > r:
        log.warning(
            "cutouts reach %.0f px from the centre but the smallest section has a radius of %.0f px: "
            "lower grains.cutouts.p_max_px to %.0f or less",
            reach,
            r,
            r - (cfg.cutouts.grid - 1) / np.sqrt(2.0),
        )


def centrality_scores(fits) -> list[float]:
    """Centrality score (``morphology.section_centrality``) of each fitted tessellation's labels."""

    return [section_centrality(f.label_image(), f.center_px) for f in fits]


def run_section(config: dict, ctx) -> None:
    """Run the ``grains:`` section (see the module docstring)."""
    from nmc_dataset.calibration._gan import TrainConfig, train, train_restarts

    check_section(config, str(ctx.recipe_path))
    if "tessellations" in config:
        tess = ctx.resolve(config["tessellations"])
    elif "tessellations" in ctx.outputs:
        tess = Path(ctx.outputs["tessellations"])
    else:
        raise RecipeError(
            "grains.tessellations: no tessellation folder given and no 'sections' section ran before", ctx.recipe_path
        )
    fits, px, source, sections = load_fits(tess, with_sections=True)
    radii = [float(f.radius_px) for f in sections]  # a depth-aware generator's particle radii
    cfg = TrainConfig.from_section(config)
    warn_if_cutouts_leave_sections(cfg, source)
    out = ctx.out / config.get("out", "grain_model")
    restarts = recipe_restarts(config)
    if restarts > 1 and not cfg.training.select_sections:
        raise RecipeError(
            "grains.training.restarts > 1 needs grains.training.select_sections > 0 (the section score picks the run)",
            ctx.recipe_path,
        )
    done = _finished_model(out, cfg, ctx.seed, restarts)
    if done is not None:
        log.info("grains: model in %s is complete, reusing it", out)
    elif restarts > 1:
        resume = bool(config.get("resume", True)) and (out / "restarts").is_dir()
        train_restarts(
            fits,
            px,
            cfg,
            seeds=range(ctx.seed, ctx.seed + restarts),
            out=out,
            resume=resume,
            source=source,
            radii_px=radii,
        )
        GrainModel.load(out)
    else:
        resume = bool(config.get("resume", True)) and (out / "training" / "checkpoint.json").is_file()
        train(fits, px, cfg, seed=ctx.seed, out=out, resume=resume, source=source, radii_px=radii)
        GrainModel.load(out)  # check what was written reads back
    ctx.outputs["grain_model"] = out
    # the validation a release card shows beside the shells': model sections vs the fitted ones

    report = out / "report"
    describe_grains(out, tess, report, samples=int(config.get("describe_samples", 4)), seed=ctx.seed)
    ctx.outputs["grain_report"] = report


def recipe_restarts(config: dict) -> int:
    """``grains.training.restarts``: training runs (seeds seed, seed+1, ...) of which the best-scoring is kept."""
    return int(((config or {}).get("training") or {}).get("restarts", 1))


def _finished_model(out: Path, cfg, seed: int, restarts: int = 1):

    if not (out / "model.json").is_file():
        return None
    try:
        m = GrainModel.load(out)
    except InputError:
        return None
    t = m.training
    if t.get("config") != cfg.to_dict() or t.get("epochs_done") != cfg.training.epochs:
        return None
    if restarts > 1:
        runs = t.get("restarts") or []
        return m if sorted(r.get("seed") for r in runs) == list(range(seed, seed + restarts)) else None
    return m if t.get("seed") == seed and not t.get("restarts") else None
