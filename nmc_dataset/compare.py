"""Measured-vs-simulated comparison of named descriptor samples (shells, grains, ...).

:func:`compare_descriptors` takes two dicts ``{name: 1-D array}`` and writes, into a folder,

* ``<name>.png``        overlaid density histograms (common bins) per descriptor,
* ``histograms.png``    all descriptors in one figure,
* ``comparison.md``     a Markdown table,
* ``comparison.json``   ``{"<descriptor>": {"wasserstein1", "ks", "n_measured", "n_simulated"}}``
  (this shape is a contract: other tools read it).

Wasserstein-1 is ``scipy.stats.wasserstein_distance`` (in the descriptor's unit); ``ks`` is the
two-sample Kolmogorov-Smirnov statistic ``scipy.stats.ks_2samp(...).statistic`` (unitless,
in [0, 1]). Non-finite values are left out of both (and counted out of ``n_*``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from scipy.stats import ks_2samp, wasserstein_distance

from nmc_dataset._util import atomic_path, write_json_atomic, write_text_atomic

__all__ = ["compare_descriptors", "distribution_distances", "plot_histograms"]


def _clean(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).ravel()
    return x[np.isfinite(x)]


def distribution_distances(measured, simulated) -> dict:
    """Wasserstein-1 distance and KS statistic of two 1-D samples (non-finite values dropped).

    Returns
    -------
    dict
        ``wasserstein1``, ``ks`` (None when a sample is empty), ``n_measured``, ``n_simulated``.
    """

    a, b = _clean(measured), _clean(simulated)
    if a.size == 0 or b.size == 0:
        return {"wasserstein1": None, "ks": None, "n_measured": int(a.size), "n_simulated": int(b.size)}
    return {
        "wasserstein1": float(wasserstein_distance(a, b)),
        "ks": float(ks_2samp(a, b).statistic),
        "n_measured": int(a.size),
        "n_simulated": int(b.size),
    }


def _label(name: str, units: dict | None) -> str:
    u = (units or {}).get(name)
    return f"{name} [{u}]" if u else name


def _hist_axes(ax, name, a, b, units, labels):
    both = np.concatenate([a, b]) if a.size + b.size else np.zeros(1)
    lo, hi = np.percentile(both, [0.5, 99.5]) if both.size > 1 else (both.min(), both.max())
    if not hi > lo:
        lo, hi = float(both.min()) - 0.5, float(both.max()) + 0.5
    bins = np.linspace(lo, hi, 31)
    if a.size:
        ax.hist(
            np.clip(a, lo, hi), bins=bins, density=True, alpha=0.55, label=f"{labels[0]} (n={a.size})", color="tab:blue"
        )
    if b.size:
        ax.hist(
            np.clip(b, lo, hi),
            bins=bins,
            density=True,
            histtype="step",
            lw=2,
            label=f"{labels[1]} (n={b.size})",
            color="tab:orange",
        )
    ax.set_xlabel(_label(name, units))
    ax.set_ylabel("density")
    ax.legend(fontsize=7)


def plot_histograms(
    measured: dict,
    simulated: dict,
    out_dir,
    *,
    title: str = "",
    units: dict | None = None,
    labels=("measured", "simulated"),
) -> list[Path]:
    """Write one PNG per descriptor plus ``histograms.png`` with all of them; returns the paths."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [k for k in measured if k in simulated] or list(simulated)
    paths = []
    for name in names:
        a, b = _clean(measured.get(name, [])), _clean(simulated.get(name, []))
        fig, ax = plt.subplots(figsize=(4.5, 3.4), dpi=110)
        _hist_axes(ax, name, a, b, units, labels)
        if title:
            ax.set_title(f"{title}: {name}", fontsize=9)
        fig.tight_layout()
        p = out_dir / f"{name}.png"
        with atomic_path(p) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
        paths.append(p)
    if names:
        ncol = min(3, len(names))
        nrow = int(np.ceil(len(names) / ncol))
        fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.2 * nrow), dpi=110, squeeze=False)
        for ax, name in zip(axes.ravel(), names):
            _hist_axes(ax, name, _clean(measured.get(name, [])), _clean(simulated.get(name, [])), units, labels)
        for ax in axes.ravel()[len(names) :]:
            ax.axis("off")
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        p = out_dir / "histograms.png"
        with atomic_path(p) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
        paths.append(p)
    return paths


def compare_descriptors(
    measured: dict,
    simulated: dict,
    out_dir: str | os.PathLike,
    *,
    title: str = "",
    units: dict | None = None,
    labels=("measured", "simulated"),
) -> dict:
    """Compare named descriptor samples; write histograms, ``comparison.md`` and ``comparison.json``.

    Parameters
    ----------
    measured, simulated : dict of str -> array_like
        1-D samples per descriptor; descriptors present in both are compared (in the order of
        ``measured``).
    out_dir : path-like
        Folder to write into (created; each file is written atomically).
    title : str
        Figure and table title.
    units : dict of str -> str, optional
        Unit per descriptor for axis labels and the table (e.g. ``{"d_max": "µm"}``).
    labels : (str, str)
        Legend names of the two samples.

    Returns
    -------
    dict
        ``{name: {"wasserstein1", "ks", "n_measured", "n_simulated"}}`` (as in ``comparison.json``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [k for k in measured if k in simulated]
    result = {name: distribution_distances(measured[name], simulated[name]) for name in names}
    plot_histograms(
        {k: measured[k] for k in names},
        {k: simulated[k] for k in names},
        out_dir,
        title=title,
        units=units,
        labels=labels,
    )
    lines = [
        f"# {title or 'Descriptor comparison'}",
        "",
        f"{labels[0]} vs {labels[1]}: Wasserstein-1 distance (in the descriptor's unit) and two-sample "
        "Kolmogorov-Smirnov statistic.",
        "",
        f"| descriptor | unit | Wasserstein-1 | KS | n {labels[0]} | n {labels[1]} | "
        f"mean {labels[0]} | mean {labels[1]} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        r = result[name]
        a, b = _clean(measured[name]), _clean(simulated[name])
        fmt = lambda v: "n/a" if v is None else f"{v:.4g}"  # noqa: E731
        ma = fmt(float(a.mean())) if a.size else "n/a"
        mb = fmt(float(b.mean())) if b.size else "n/a"
        lines.append(
            f"| {name} | {(units or {}).get(name, '') or '-'} | {fmt(r['wasserstein1'])} | {fmt(r['ks'])} "
            f"| {r['n_measured']} | {r['n_simulated']} | {ma} | {mb} |"
        )
    lines += ["", "![histograms](histograms.png)", ""]
    write_text_atomic(out_dir / "comparison.md", "\n".join(lines))
    write_json_atomic(out_dir / "comparison.json", result)
    return result
