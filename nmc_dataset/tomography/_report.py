"""The ``score-segmentation`` report: ``score.json``, ``score.md`` and slice figures.

``phases.png`` shows three slices (the middle slice along z, y and x) as rows: the CT (when the
truth file has one), the true phases, the predicted phases, and the errors (wrongly classed voxels
in red over the grey truth). ``particles.png`` shows the true and predicted instances of the middle
z slice (a predicted instance in the colour of the true one it overlaps most) with split true instances
outlined in orange and merged predicted ones in magenta.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from nmc_dataset.tomography._volumes import PHASES

REPORT_FORMAT = "nmc-dataset/segmentation-score"
REPORT_FORMAT_VERSION = 1
_PHASE_RGB = np.array([[0.08, 0.08, 0.12], [0.85, 0.75, 0.35], [0.30, 0.65, 0.90]])


def _slices(a: np.ndarray):
    z, y, x = (s // 2 for s in a.shape)
    return [("z", z, a[z]), ("y", y, a[:, y]), ("x", x, a[:, :, x])]


def _grey(img):
    lo, hi = np.percentile(img, [0.5, 99.5])
    return np.clip((img - lo) / max(hi - lo, 1e-12), 0, 1)


def phase_figure(path: Path, true_phase, pred_phase, ct=None) -> None:
    """Write ``phases.png`` (see the module docs).

    Parameters
    ----------
    path : Path
        Output PNG file.
    true_phase, pred_phase : (Z, Y, X) uint8 arrays
        Phase labels (0 pore, 1 NMC, 2 binder).
    ct : (Z, Y, X) array, optional
        Grey volume, shown as an extra first column.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    cols = (["CT"] if ct is not None else []) + ["truth", "prediction", "errors"]
    fig, axes = plt.subplots(3, len(cols), figsize=(3.2 * len(cols), 9.6), squeeze=False)
    ts, ps = _slices(true_phase), _slices(pred_phase)
    cs = _slices(ct) if ct is not None else [None] * 3
    for r in range(3):
        name, idx, t = ts[r]
        p = ps[r][2]
        panels = []
        if ct is not None:
            panels.append(("gray", _grey(cs[r][2])))
        panels += [(None, _PHASE_RGB[t]), (None, _PHASE_RGB[p])]
        err = np.repeat((0.35 + 0.4 * (t / 2.0))[..., None], 3, axis=-1)
        wrong = t != p
        err[wrong] = [0.9, 0.1, 0.1]
        panels.append((None, err))
        for c, (cmap, img) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(img, cmap=cmap, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(cols[c])
            if c == 0:
                ax.set_ylabel(f"{name} = {idx}")
        axes[r, -1].set_xlabel(f"{wrong.mean():.1%} wrong")
    handles = [Patch(color=_PHASE_RGB[k], label=v) for k, v in PHASES.items()] + [
        Patch(color=(0.9, 0.1, 0.1), label="wrong phase")
    ]
    fig.legend(handles=handles, loc="lower center", ncol=4, frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _instance_rgb(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(labels.max()) + 1
    colours = 0.25 + 0.7 * rng.random((n, 3))
    colours[0] = 0.05
    return colours[labels]


def particle_figure(path: Path, true_particle, pred_particle, split_ids, merge_ids) -> None:
    """Write ``particles.png``: true and predicted instances of the middle z slice.

    Parameters
    ----------
    path : Path
        Output PNG file.
    true_particle, pred_particle : (Z, Y, X) int arrays
        True and predicted particle instance labels, 0 = none.
    split_ids : sequence of int
        True instances split by the prediction (outlined in orange).
    merge_ids : sequence of int
        Predicted instances that merge true ones (outlined in magenta).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z = true_particle.shape[0] // 2
    t, p = true_particle[z].astype(np.int64), pred_particle[z].astype(np.int64)
    # a predicted instance takes the colour of the true instance it overlaps most in this slice
    t_rgb = _instance_rgb(t)
    p_lut = _instance_rgb(np.arange(int(p.max()) + 1), seed=1)
    both = (t > 0) & (p > 0)
    if both.any():
        pairs, counts = np.unique(np.column_stack([p[both], t[both]]), axis=0, return_counts=True)
        order = np.lexsort((-counts, pairs[:, 0]))
        pairs = pairs[order]
        first = np.r_[True, pairs[1:, 0] != pairs[:-1, 0]]
        rng = np.random.default_rng(0)
        t_lut = 0.25 + 0.7 * rng.random((int(t.max()) + 1, 3))
        p_lut[pairs[first, 0]] = t_lut[pairs[first, 1]]
    p_rgb = p_lut[p]
    p_rgb[p == 0] = 0.05
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.2))
    for ax, lab, img, title, ids, colour in (
        (axes[0], t, t_rgb, "truth (orange outline: split)", split_ids, (1.0, 0.55, 0.0)),
        (axes[1], p, p_rgb, "prediction (magenta outline: merge)", merge_ids, (1.0, 0.0, 1.0)),
    ):
        bad = np.isin(lab, np.asarray(ids, dtype=lab.dtype)) & (lab > 0)
        edge = bad & ~ndimage.binary_erosion(bad, iterations=1)
        img[edge] = colour
        ax.imshow(img, interpolation="nearest")
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"z = {z}: {len(np.unique(lab[lab > 0]))} instances in this slice")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(score: dict, seg_name: str, truth_name: str) -> str:
    """The report as Markdown tables.

    Parameters
    ----------
    score : dict
        The segmentation score (``method``, ``shape``, ``voxel_size_um``, ``voxel_accuracy``, ``mean_dice``,
        ``phases`` and optionally ``particles``).
    seg_name, truth_name : str
        Names of the scored segmentation and of the truth, for the title.

    Returns
    -------
    str
        Markdown text linking ``phases.png`` (and ``particles.png`` when instances were scored).
    """
    lines = [
        f"# Segmentation score: `{seg_name}` against `{truth_name}`",
        "",
        (
            f"Method: `{score.get('method', '?')}`; grid {' × '.join(map(str, score['shape']))} voxels of "
            f"{score['voxel_size_um']:g} µm; voxel accuracy {score['voxel_accuracy']:.4f}, mean Dice "
            f"{score['mean_dice']:.4f}."
        ),
        "",
        "## Accuracy and boundaries",
        "",
        "| phase | Dice | IoU | fraction truth | fraction pred | ASSD (µm) | HD95 (µm) |",
        "|---|---|---|---|---|---|---|",
    ]

    def f(v, fmt=".4f"):
        return "–" if v is None else format(v, fmt)

    for name, s in score["phases"].items():
        b = s["boundary"]
        lines.append(
            f"| {name} | {f(s['dice'])} | {f(s['iou'])} | {f(s['fraction_truth'])} | "
            f"{f(s['fraction_pred'])} | {f(b['assd_um'], '.4g')} | {f(b['hd95_um'], '.4g')} |"
        )
    lines += [
        "",
        "## Topology (6-connected phases)",
        "",
        "| phase | components truth / pred | Euler χ truth / pred | percolates z y x: truth / pred |",
        "|---|---|---|---|",
    ]
    for name, s in score["phases"].items():
        t, p = s["topology"]["truth"], s["topology"]["pred"]

        def perc(d):
            return " ".join("✓" if d["percolates"][a] else "✗" for a in ("z", "y", "x"))

        flag = "" if t["percolates"] == p["percolates"] else " **(differs)**"
        lines.append(
            f"| {name} | {t['components']} / {p['components']} | {t['euler']} / {p['euler']} | "
            f"{perc(t)} / {perc(p)}{flag} |"
        )
    if "particles" in score:
        q = score["particles"]
        lines += [
            "",
            "## Particle instances (matched at IoU > 0.5)",
            "",
            (
                "| truth | predicted | matched | missed | false | precision | recall | F1 | mean IoU | "
                "split (pieces) | merges (true absorbed) |"
            ),
            "|---|---|---|---|---|---|---|---|---|---|---|",
            (
                f"| {q['n_truth']} | {q['n_pred']} | {q['matched']} | {q['missed']} | {q['false']} | "
                f"{q['precision']:.3f} | {q['recall']:.3f} | {q['f1']:.3f} | {q['mean_matched_iou']:.3f} | "
                f"{q['split_truth']} ({q['split_pieces']}) | {q['merged_pred']} ({q['merged_truth']}) |"
            ),
        ]
    lines += ["", "![phases](phases.png)", ""]
    if "particles" in score:
        lines += ["![particles](particles.png)", ""]
    lines += [
        (
            "Definitions: docs/segmentation.md of nmc-dataset (Dice, ASSD, HD95, Euler characteristic, "
            "percolation, split/merge)."
        ),
        "",
    ]
    return "\n".join(lines)
