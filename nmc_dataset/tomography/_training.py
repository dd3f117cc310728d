"""``train-segmenter``: the training config, its data sources, training and the test-split evaluation.

A config is a YAML mapping (or a recipe whose ``segmenter:`` section is one)::

    data:                      # labelled CT volume files (kind ct) or folders of them,
      train: [renders/train/]  # paths relative to the config file
      val: [renders/val/a.h5]
      test: [renders/test/]
    # or, instead of data:, known-truth phantom volumes drawn in memory
    phantom: {train: 4, val: 1, test: 2, seed: 1000, size: 96}   # + any phantom_ct_arrays keyword
    model: {crop: 32, epochs: 12, ...}                        # SegmenterConfig settings

The model folder gets ``model.safetensors``, ``config.json``, ``log.csv`` (one row per epoch) and
``evaluation.json`` / ``evaluation.md``: the network and ``otsu-watershed`` scored on every test
volume, and whether the network beats the classical baseline on mean Dice and on splits + merges.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np
import yaml

from nmc_dataset._util import atomic_dir, log, write_json_atomic, write_text_atomic
from nmc_dataset.errors import InputError
from nmc_dataset.outputs import check_output_folder
from nmc_dataset.tomography._classical import otsu_watershed
from nmc_dataset.tomography._phantom import PHANTOM_DEFAULTS, phantom_ct_arrays
from nmc_dataset.tomography._scoring import score_segmentation
from nmc_dataset.tomography._volumes import read_volumes

SPLITS = ("train", "val", "test")


def load_config(path: str | os.PathLike) -> tuple[dict, Path]:
    """Read a training config (or a recipe's ``segmenter:`` section); returns it and its folder."""

    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("config file not found", path) from None
    except (OSError, yaml.YAMLError) as e:
        raise InputError(f"not a readable YAML config ({str(e).splitlines()[0]})", path) from None
    if isinstance(doc, dict) and "segmenter" in doc:
        doc = doc["segmenter"]
    if not isinstance(doc, dict):
        raise InputError("expected a mapping with data: (or phantom:) and model:", path)
    unknown = sorted(set(doc) - {"data", "phantom", "model"})
    if unknown:
        raise InputError(f"unknown key(s) {', '.join(unknown)} (known: data, phantom, model)", path)
    if ("data" in doc) == ("phantom" in doc):
        raise InputError("give exactly one data source: data: (files) or phantom: (drawn volumes)", path)
    return doc, path.parent


def _files(entries, base: Path, where) -> list[Path]:
    if isinstance(entries, (str, os.PathLike)):
        entries = [entries]
    out = []
    for e in entries or []:
        p = Path(e)
        p = p if p.is_absolute() else base / p
        if p.is_dir():
            found = sorted(p.glob("*.h5"))
            if not found:
                raise InputError("folder holds no .h5 volume files", p)
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise InputError(f"data file or folder not found: {p}", where)
    return out


def load_samples(doc: dict, base: Path, cfg, where) -> dict:
    """The prepared volumes of each split (``train``, ``val``, ``test``) with their grey values."""
    from nmc_dataset.tomography._segmenter import prepare_sample

    out = {s: [] for s in SPLITS}
    if "data" in doc:
        data = doc["data"]
        if not isinstance(data, dict) or set(data) - set(SPLITS):
            raise InputError("data: must map train/val/test to files or folders", where)
        for split in SPLITS:
            for f in _files(data.get(split), base, where):
                arrays, _ = read_volumes(f, ["ct", "phase", "particle"], kinds=("ct",))
                out[split].append(
                    (prepare_sample(f.name, arrays["ct"], arrays["phase"], arrays["particle"], cfg), arrays["ct"])
                )
    else:
        ph = dict(doc["phantom"] or {})
        counts = {s: int(ph.pop(s, d)) for s, d in zip(SPLITS, (4, 1, 2))}
        seed = int(ph.pop("seed", 1000))
        bad = sorted(set(ph) - set(PHANTOM_DEFAULTS))
        if bad:
            raise InputError(f"phantom: unknown key(s) {', '.join(bad)}", where)
        k = 0
        for split in SPLITS:
            for _ in range(counts[split]):
                a = phantom_ct_arrays(seed + k, **{**PHANTOM_DEFAULTS, **ph})
                out[split].append(
                    (prepare_sample(f"phantom-{seed + k}", a["ct"], a["phase"], a["particle"], cfg), a["ct"])
                )
                k += 1
    if not out["train"]:
        raise InputError("no training volumes (data: train: or phantom: train:)", where)
    return out


def evaluate(seg, test: list, device) -> dict:
    """Score the network and otsu-watershed on each test volume; aggregate and compare."""

    rows = []
    for sample, ct in test:
        truth_phase = sample.phase.astype(np.uint8)
        for method in ("net", "otsu-watershed"):
            if method == "net":
                phase, particle, _ = seg.segment(ct, device)
            else:
                phase, particle, _ = otsu_watershed(ct)
            s = score_segmentation(phase, truth_phase, particle, sample.particle)
            q = s["particles"]
            rows.append(
                {
                    "volume": sample.name,
                    "method": method,
                    "mean_dice": s["mean_dice"],
                    **{f"dice_{k}": v["dice"] for k, v in s["phases"].items()},
                    "f1": q["f1"],
                    "split_truth": q["split_truth"],
                    "merged_pred": q["merged_pred"],
                    "n_truth": q["n_truth"],
                    "n_pred": q["n_pred"],
                    "matched": q["matched"],
                }
            )
    summary = {}
    for method in ("net", "otsu-watershed"):
        r = [x for x in rows if x["method"] == method]
        summary[method] = {
            "mean_dice": float(np.mean([x["mean_dice"] for x in r])),
            "f1": float(np.mean([x["f1"] for x in r])),
            "splits": int(sum(x["split_truth"] for x in r)),
            "merges": int(sum(x["merged_pred"] for x in r)),
            **{f"dice_{k}": float(np.mean([x[f"dice_{k}"] for x in r])) for k in ("pore", "nmc", "binder")},
        }
    n, c = summary["net"], summary["otsu-watershed"]
    beats = {
        "mean_dice": n["mean_dice"] > c["mean_dice"],
        "splits_plus_merges": n["splits"] + n["merges"] < c["splits"] + c["merges"],
    }
    return {"volumes": rows, "summary": summary, "net_beats_otsu_watershed": beats}


def _evaluation_md(ev: dict) -> str:
    s = ev["summary"]
    lines = [
        "# Test-split evaluation",
        "",
        "| method | mean Dice | Dice pore | Dice NMC | Dice binder | instance F1 | splits | merges |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m, r in s.items():
        lines.append(
            f"| {m} | {r['mean_dice']:.4f} | {r['dice_pore']:.4f} | {r['dice_nmc']:.4f} | "
            f"{r['dice_binder']:.4f} | {r['f1']:.3f} | {r['splits']} | {r['merges']} |"
        )
    b = ev["net_beats_otsu_watershed"]
    lines += [
        "",
        (
            f"The network beats otsu-watershed on mean Dice: **{'yes' if b['mean_dice'] else 'no'}**; "
            f"on splits + merges: **{'yes' if b['splits_plus_merges'] else 'no'}**."
        ),
        "",
    ]
    return "\n".join(lines)


def run_training(config, out: Path, *, device="auto", seed=None, epochs=None):
    """Train a segmenter from a config file into ``out`` (see the module docs); returns the evaluation.

    Parameters
    ----------
    config : path-like
        Training config YAML (or a recipe with a ``segmenter:`` section).
    out : Path
        Output model folder (refused if it holds files the tool did not write).
    device : str, default "auto"
        ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
    seed : int, optional
        Overrides the config's ``model.seed``.
    epochs : int, optional
        Overrides the config's ``model.epochs``.

    Returns
    -------
    dict or None
        The test-split evaluation, None when the config has no test volumes.
    """

    from nmc_dataset.tomography._segmenter import MODEL_FORMAT, SegmenterConfig, resolve_device, train_segmenter

    check_output_folder(out, "config.json", MODEL_FORMAT)
    dev = resolve_device(device)
    doc, base = load_config(config)
    settings = dict(doc.get("model") or {})
    if seed is not None:
        settings["seed"] = int(seed)
    if epochs is not None:
        settings["epochs"] = int(epochs)
    cfg = SegmenterConfig.from_dict(settings, config)
    data = load_samples(doc, base, cfg, config)
    log.info("train-segmenter: %d train, %d val, %d test volumes on %s", *(len(data[s]) for s in SPLITS), dev)
    seg = train_segmenter([s for s, _ in data["train"]], [s for s, _ in data["val"]], cfg, device=dev)
    ev = evaluate(seg, data["test"], dev) if data["test"] else None
    with atomic_dir(out) as tmp:
        seg.record["config"] = os.fspath(config)
        seg.save(tmp)
        buf = io.StringIO()
        hist = seg.record["history"]
        w = csv.DictWriter(buf, fieldnames=list(hist[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(hist)
        write_text_atomic(tmp / "log.csv", buf.getvalue())
        if ev is not None:
            write_json_atomic(
                tmp / "evaluation.json", {"format": "nmc-dataset/segmenter-evaluation", "format_version": 1, **ev}
            )
            write_text_atomic(tmp / "evaluation.md", _evaluation_md(ev))
    if ev is not None:
        s = ev["summary"]
        log.info(
            "test split: net mean Dice %.4f F1 %.3f (%d splits, %d merges) vs otsu-watershed %.4f F1 %.3f "
            "(%d splits, %d merges)",
            s["net"]["mean_dice"],
            s["net"]["f1"],
            s["net"]["splits"],
            s["net"]["merges"],
            s["otsu-watershed"]["mean_dice"],
            s["otsu-watershed"]["f1"],
            s["otsu-watershed"]["splits"],
            s["otsu-watershed"]["merges"],
        )
    log.info(
        "segmenter written to %s (kept epoch %d, %.0f s of training)",
        out,
        seg.record["kept_epoch"],
        seg.record["seconds"],
    )
    return ev
