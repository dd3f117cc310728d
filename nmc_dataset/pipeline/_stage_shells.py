"""The ``shells:`` recipe section: fit (from a CT volume or a known-truth phantom), sample, describe.

Writes ``<out>/shells/``: ``shell_model.json`` + ``shell_model.coefficients.parquet`` (when
fitting), ``shells.parquet`` (``n_samples`` shells) and ``report/`` (descriptors, histograms,
``comparison.json``). Records ``ctx.outputs["shell_model"]`` (model path),
``ctx.outputs["shells"]`` and ``ctx.outputs["shell_report"]``.

Random streams (``_util.item_seed(ctx.seed, 0, stream)``): 101 phantom, 102 rotations of the
fit, 103 sampling.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nmc_dataset._util import item_seed, log
from nmc_dataset.errors import RecipeError
from nmc_dataset.pipeline._shells import describe_shells, fit_volume, write_shells
from nmc_dataset.shells._model import ShellModel

STREAM_PHANTOM, STREAM_FIT, STREAM_SAMPLE = 101, 102, 103


def _rng(ctx, stream):
    return np.random.default_rng(item_seed(ctx.seed, 0, stream))


def run_section(config: dict, ctx) -> Path:
    """Run the ``shells:`` section (see the module docstring); returns the model path."""

    where = f"{ctx.recipe_path}: shells"
    sources = [k for k in ("volume", "phantom", "model") if k in config]
    if len(sources) != 1:
        raise RecipeError(f"give exactly one of volume, phantom or model (got {', '.join(sources) or 'none'})", where)
    out = ctx.out / "shells"
    degree = int(config.get("degree", 9))
    selection = config.get("selection", "aic")
    model_path = out / "shell_model.json"
    if "model" in config:
        model_path = ctx.resolve(config["model"])
        model = ShellModel.load(model_path)
    elif "volume" in config:
        from nmc_dataset.io._ct import read_volume

        v = config["volume"]
        path = ctx.resolve(v["path"])
        vol = read_volume(path, dataset=v.get("dataset"), shape=v.get("shape"), dtype=v.get("dtype"))
        res = fit_volume(
            vol,
            v["voxel_size_um"],
            phase=v.get("phase"),
            degree=degree,
            rng=_rng(ctx, STREAM_FIT),
            selection=selection,
            where=path,
        )
        model = res.model
        model.write(model_path)
    else:
        from nmc_dataset.synthetic._ct_phantom import make_ct_phantom, reference_shell_model

        p = config["phantom"]
        size = int(p.get("size", 128))
        truth = reference_shell_model(
            float(p.get("mean_radius_vox", 10.0)), voxel_size_um=float(p.get("voxel_size_um", 0.128)), degree=degree
        )
        ph = make_ct_phantom(
            truth,
            shape=(size, size, size),
            n_particles=int(p.get("n_particles", 60)),
            rng=_rng(ctx, STREAM_PHANTOM),
            noise_sigma=float(p.get("noise_sigma", 0.08)),
            blur_sigma=float(p.get("blur_sigma", 1.0)),
        )
        log.info("shells: phantom %d³ with %d shells", size, ph.n_particles)
        res = fit_volume(
            ph.volume,
            truth.voxel_size_um,
            degree=degree,
            rng=_rng(ctx, STREAM_FIT),
            selection=selection,
            where=f"{where}.phantom",
        )
        model = res.model
        model.source["phantom"] = {
            "size": size,
            "n_particles_placed": ph.n_particles,
            "truth": truth.to_json()["degrees"],
        }
        if p.get("save_volume", False):
            from nmc_dataset._util import atomic_path

            out.mkdir(parents=True, exist_ok=True)
            for name, arr in (("phantom.npy", ph.volume), ("phantom_labels.npy", ph.labels)):
                with atomic_path(out / name) as tmp:
                    with open(tmp, "wb") as f:
                        np.save(f, arr)
        model.write(model_path)
    log.info("%s", model.summary())
    ctx.outputs["shell_model"] = model_path
    n = int(config.get("n_samples", 1000))
    if n > 0:
        coeffs, stats = model.sample_coefficients(n, _rng(ctx, STREAM_SAMPLE), return_stats=True)
        shells = out / "shells.parquet"
        write_shells(shells, coeffs, model, seed=int(ctx.seed), redrawn=stats["redrawn"])
        ctx.outputs["shells"] = shells
        if config.get("describe", True):
            has_measured = model.coefficients is not None or bool(model.coefficients_file)
            report = out / "report"
            describe_shells(
                shells,
                report,
                against=model_path if has_measured else None,
                subdivisions=int(config.get("subdivisions", 4)),
            )
            ctx.outputs["shell_report"] = report
    return model_path
