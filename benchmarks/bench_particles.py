"""Benchmark: discretising and meshing one full-size particle.

A ~10 µm particle (shell from ``reference_shell_model`` at a mean radius of ~5 µm) with the
radially elongated teacher grain architecture at the paper's intensity (0.0018 px⁻³, 0.05 µm
pixels: ~7,500 grains), voxelised at 0.05 µm (~200³ voxels).

Prints: assembly time (centres of mass), voxelisation time and peak memory (target ≤ 2 s,
≤ 1 GiB) next to a naive baseline measured in the same run (brute-force labels and the SH
radius at every voxel, timed on a random subset of voxels and extrapolated), surface-mesh time,
and tet-mesh times with coarsening (re-voxelised at the mesh size; target < 1 min).

Timings are wall and process-CPU seconds: on a shared, loaded machine the CPU time is the
better estimate of an idle machine's wall time for this single-threaded code.

Usage: python benchmarks/bench_particles.py [--radius-um 5] [--voxel-size-um 0.05]
       [--mesh-sizes 0.15,0.1] [--seed 0] [--skip-tets]
"""

from __future__ import annotations

import argparse
import os
import resource
import time
import tracemalloc

import numpy as np


class _T(float):
    """Wall seconds (a float) that also carries the process CPU seconds (``.cpu``)."""

    def __str__(self):
        return f"{float(self):.2f} s wall / {self.cpu:.2f} s CPU"


def _timed(fn, *a, **k):
    t, c = time.perf_counter(), time.process_time()
    out = fn(*a, **k)
    r = _T(time.perf_counter() - t)
    r.cpu = time.process_time() - c
    return out, r


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--radius-um", type=float, default=5.0)
    ap.add_argument("--voxel-size-um", type=float, default=0.05)
    ap.add_argument("--mesh-sizes", default="0.15,0.1")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-tets", action="store_true")
    ap.add_argument("--threads", type=int, default=1, help="numba/gmsh threads")
    args = ap.parse_args(argv)
    os.environ.setdefault("NUMBA_NUM_THREADS", str(args.threads))

    from nmc_dataset.export import meshes
    from nmc_dataset.grains.gbpd import hard_labels_bruteforce
    from nmc_dataset.particles.assemble import assemble
    from nmc_dataset.particles.voxelize import (grid_points_px, inside_shell, particle_grid, voxelize)
    from nmc_dataset.synthetic.ct_phantom import reference_shell_model
    from nmc_dataset.synthetic.ebsd import radial_teacher_gbpd

    rng = np.random.default_rng(args.seed)
    shell = reference_shell_model(mean_radius_vox=args.radius_um / 0.128, voxel_size_um=0.128)
    coeffs_um = shell.sample_coefficients(1, rng)[0] * shell.voxel_size_um
    px = 0.05
    rmax_px = float(np.abs(coeffs_um[0]) / np.sqrt(4 * np.pi)) / px * 1.5
    g, t_draw = _timed(radial_teacher_gbpd, rng, radius_px=rmax_px, margin_px=10.0)
    print(f"shell: mean radius {coeffs_um[0] / np.sqrt(4 * np.pi):.2f} µm; teacher GBPD: {g.n} seeds "
          f"drawn in {t_draw:.2f} s")

    part, t_asm = _timed(assemble, coeffs_um, g, px)
    print(f"assembly (centres of mass on a 1 px lattice): {t_asm} -> {part.n_grains} grains kept")

    voxelize(part, args.voxel_size_um * 4)  # warm-up (numba compilation, caches)
    tracemalloc.start()
    vol, t_vox = _timed(voxelize, part, args.voxel_size_um)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    nvox = vol.labels.size
    print(f"voxelise {vol.labels.shape} = {nvox / 1e6:.1f} M voxels at {args.voxel_size_um} µm: "
          f"{t_vox} (target <= 2 s, ratio wall {t_vox / 2:.2f}, CPU {t_vox.cpu / 2:.2f}); peak traced memory "
          f"{peak / 2**30:.3f} GiB (target <= 1 GiB); process max RSS {rss:.2f} GiB")

    # naive baseline: brute-force labels + SH radius at every voxel, on a random subset
    grid = particle_grid(part, args.voxel_size_um)
    sub = np.random.default_rng(1).choice(nvox, size=20_000, replace=False)
    pts_px = grid_points_px(grid, px, sub)
    t0 = time.process_time()
    ins = inside_shell(part.coeffs_um, pts_px * px)
    hard_labels_bruteforce(part.grains, pts_px[ins])
    t_naive_sub = time.process_time() - t0
    frac_in = float((vol.labels > 0).mean())
    t_naive = t_naive_sub / len(sub) * nvox * max(frac_in / max(ins.mean(), 1e-9), 1.0)
    print(f"naive baseline (brute force over {part.n_grains} seeds; CPU time on {len(sub)} voxels, "
          f"extrapolated): {t_naive:.0f} s CPU -> speed-up {t_naive / max(t_vox.cpu, 1e-9):.0f}x (CPU)")

    (lab, changed), t_clean = _timed(meshes.clean_labels, vol.labels)
    surf, t_surf = _timed(meshes.grain_surface_mesh, lab, vol.origin_um, vol.voxel_size_um, part.n_grains)
    print(f"surface mesh: clean-up {t_clean} ({changed} voxels changed) + surface nets {t_surf} "
          f"-> {len(surf.faces)} triangles, {len(surf.vertices)} vertices")

    if not args.skip_tets:
        for h in [float(x) for x in args.mesh_sizes.split(",") if x]:
            t0, c0 = time.perf_counter(), time.process_time()
            coarse = voxelize(part, h)
            clab, _ = meshes.clean_labels(coarse.labels)
            cs = meshes.grain_surface_mesh(clab, coarse.origin_um, h, part.n_grains)
            t_prep = _T(time.perf_counter() - t0)
            t_prep.cpu = time.process_time() - c0
            try:
                tm, t_tet = _timed(meshes.tet_mesh, cs, h, threads=args.threads)
                note = ""
            except RuntimeError as e:
                print(f"  smoothed surface failed ({e}); unsmoothed:")
                cs = meshes.grain_surface_mesh(clab, coarse.origin_um, h, part.n_grains, 0)
                tm, t_tet = _timed(meshes.tet_mesh, cs, h, threads=args.threads)
                note = " (unsmoothed)"
            print(f"tet mesh at mesh size {h} µm{note}: prepare {t_prep} + gmsh {t_tet} = "
                  f"{t_prep + t_tet:.1f} s wall, {t_prep.cpu + t_tet.cpu:.1f} s CPU (target < 60 s) -> {len(tm.tets)} tets, "
                  f"{len(np.unique(tm.grain))} grains, all positive: {bool((tm.signed_volumes() > 0).all())}")


if __name__ == "__main__":
    main()
