"""Closed loop of the orientation texture: phantom-ebsd (known texture) -> import-ebsd -> fit-orientations.

Prints, per texture and seed, the truth, the fit with and without the correction for the 2D
radial directions' angular error, and the errors in units of the fit's standard error, plus the
time of each stage. Usage::

    python benchmarks/closed_loop_orientations.py [--seeds 0-3] [--sections 8] [--radius-px 60]
        [--textures=-8,0;-12,3;4,0;random]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from nmc_dataset.cli import _main as cli


def _seeds(text):
    if "-" in text:
        a, b = text.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(s) for s in text.split(",")]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0-3")
    ap.add_argument("--sections", type=int, default=8)
    ap.add_argument("--radius-px", type=float, default=60.0)
    ap.add_argument("--textures", default="-8,0;-12,3;4,0;random")
    args = ap.parse_args(argv)
    rows = []
    print(
        "texture     seed  grains  kappa (raw)        lambda (raw)      z_kappa z_lambda (raw)   "
        "blur rms  textured p  t_phantom t_import t_fit"
    )
    for tex in args.textures.split(";"):
        for seed in _seeds(args.seeds):
            with tempfile.TemporaryDirectory() as tmp:
                tmp = Path(tmp)
                t0 = time.perf_counter()
                assert (
                    cli.main(
                        [
                            "phantom-ebsd",
                            "--out",
                            str(tmp / "scans"),
                            "--n-central",
                            str(args.sections),
                            "--n-off-center",
                            "0",
                            "--radius-px",
                            str(args.radius_px),
                            "--low-ci",
                            "0,0,0",
                            f"--texture={tex}",
                            "--seed",
                            str(seed),
                        ]
                    )
                    == 0
                )
                t1 = time.perf_counter()
                assert (
                    cli.main(
                        [
                            "import-ebsd",
                            *sorted(str(p) for p in (tmp / "scans").glob("*.ang")),
                            "--out",
                            str(tmp / "sections"),
                            "--central",
                            "all",
                        ]
                    )
                    == 0
                )
                t2 = time.perf_counter()
                assert cli.main(["fit-orientations", str(tmp / "sections"), "--out", str(tmp / "om.json")]) == 0
                t3 = time.perf_counter()
                f = json.loads((tmp / "om.json").read_text())["fit"]
            k_true, l_true = (0.0, 0.0) if tex == "random" else (float(x) for x in tex.split(","))
            raw = f["raw"]
            zk, zl = (f["kappa"] - k_true) / f["kappa_se"], (f["lambda"] - l_true) / f["lambda_se"]
            rzk, rzl = (raw["kappa"] - k_true) / raw["kappa_se"], (raw["lambda"] - l_true) / raw["lambda_se"]
            rows.append({"texture": tex, "seed": seed, "fit": f, "z": [zk, zl], "z_raw": [rzk, rzl]})
            print(
                f"{tex:10s} {seed:4d} {f['n']:7d}  {f['kappa']:6.2f}±{f['kappa_se']:.2f} ({raw['kappa']:6.2f})  "
                f"{f['lambda']:5.2f}±{f['lambda_se']:.2f} ({raw['lambda']:5.2f})  {zk:6.2f} {zl:6.2f} "
                f"({rzk:5.2f} {rzl:5.2f})  {f['blur_rms_deg'] or 0:5.2f}°   {f['textured']!s:5s} "
                f"{f['p_value_no_texture']:.2g}  {t1 - t0:6.1f} s {t2 - t1:5.1f} s {t3 - t2:4.1f} s"
            )
    zs = [abs(z) for r in rows if r["texture"] != "random" for z in r["z"]]
    zr = [abs(z) for r in rows if r["texture"] != "random" for z in r["z_raw"]]
    if zs:
        print(
            f"max |z| corrected {max(zs):.2f}, uncorrected {max(zr):.2f}; "
            f"rms z corrected {(sum(z * z for z in zs) / len(zs)) ** 0.5:.2f}, "
            f"uncorrected {(sum(z * z for z in zr) / len(zr)) ** 0.5:.2f}"
        )
    return rows


if __name__ == "__main__":
    main()
