"""Recipe section ``sections:``: EBSD scans (measured or synthetic) → sections → fitted 2D tessellations.

Records ``ctx.outputs["sections"]`` (the import folder) and, when fitting is enabled,
``ctx.outputs["tessellations"]`` (the fit-sections folder). With ``synthetic:`` the known-truth
scans and their true labels are written to ``<out>/synthetic_scans/`` first and
``ctx.outputs["synthetic_scans"]`` points there.
"""

from __future__ import annotations

from nmc_dataset._util import item_seed, log
from nmc_dataset.errors import RecipeError
from nmc_dataset.pipeline._ebsd_import import DEFAULT_DILATE_PX, DEFAULT_FILL, expand_scans, import_ebsd


def check_section(cfg: dict, ctx=None) -> None:
    """Checks the JSON Schema cannot express (``low <= high`` ranges)."""
    where = getattr(ctx, "recipe_path", ctx) or "sections"  # a RunContext or a location string
    syn = cfg.get("synthetic") or {}
    pairs = [("synthetic.off_center_frac", syn.get("off_center_frac"))]
    teacher = syn.get("teacher") or {}
    pairs += [(f"synthetic.teacher.{k}", teacher.get(k)) for k in ("radial_diag", "tangential_diag", "offset_range")]
    for key, value in pairs:
        if value is not None and not value[0] <= value[1]:
            raise RecipeError(f"sections.{key}: need [low, high] with low <= high, got {value}", where)
    if syn and syn.get("n_central", 4) + syn.get("n_off_center", 2) < 1:
        raise RecipeError("sections.synthetic: n_central + n_off_center must be >= 1", where)


def run_section(config: dict, ctx) -> None:
    """Run the ``sections:`` recipe section (see the module docstring)."""

    check_section(config, str(ctx.recipe_path))
    out = ctx.out
    imp = dict(config.get("import") or {})
    if "synthetic" in config:
        from nmc_dataset.synthetic._ebsd import write_synthetic_sections

        syn = dict(config["synthetic"])
        teacher = dict(syn.pop("teacher", {}) or {})
        for k in ("radial_diag", "tangential_diag", "offset_range"):
            if k in teacher:
                teacher[k] = tuple(teacher[k])
        if "off_center_frac" in syn:
            syn["off_center_frac"] = tuple(syn["off_center_frac"])
        syn_dir = out / "synthetic_scans"
        import numpy as np

        rng = np.random.default_rng(item_seed(ctx.seed, 0, stream=31))
        records = write_synthetic_sections(
            syn_dir, rng, teacher=teacher, formats=tuple(syn.pop("formats", ["ang"])), **syn
        )
        scans = [syn_dir / r["scan"] for r in records]
        ctx.outputs["synthetic_scans"] = syn_dir
    else:
        scans = expand_scans(config["scans"], base=ctx.recipe_path.parent)
    sections_dir = out / config.get("out", "sections")
    import_ebsd(
        scans,
        sections_dir,
        min_ci=imp.get("min_ci", 0.1),
        max_misorientation_deg=imp.get("max_misorientation_deg", 5.0),
        min_grain_px=imp.get("min_grain_px", 5),
        center_px=imp.get("center_px"),
        central=config.get("central", "auto"),
        threshold=config.get("threshold"),
        dilate_px=imp.get("dilate_px", DEFAULT_DILATE_PX),
        fill=imp.get("fill", DEFAULT_FILL),
        check_sizes=imp.get("check_sizes", True),
    )
    ctx.outputs["sections"] = sections_dir
    fit = dict(config.get("fit") or {})
    if fit.get("enabled", True):
        from nmc_dataset.calibration._fit2d import fit_sections

        tess_dir = out / config.get("tessellations", "tessellations")
        fit_sections(
            sections_dir,
            tess_dir,
            steps=int(fit.get("steps", 300)),
            seed=int(ctx.seed),
            filled_weight=float(fit.get("filled_weight", 1.0)),
        )
        ctx.outputs["tessellations"] = tess_dir
        log.info("sections: tessellations in %s", tess_dir)
    else:
        log.info("sections: fitting disabled; sections in %s", sections_dir)


__all__ = ["check_section", "run_section"]
