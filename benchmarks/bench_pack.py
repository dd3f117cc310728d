"""Benchmark of ``pack``: a (40 µm)³ electrode at 0.1 µm (400³ voxels) to an active fraction of 0.55.

Target: <= 60 s. Prints the stage times (packing of the shells, particle drawing + voxelisation,
binder), the peak memory (ru_maxrss) and, as a same-run baseline, the time scipy's EDT takes on the
400³ phase volume (one distance transform, the usual first step of binder placement).

    python benchmarks/bench_pack.py [--box-um 40] [--fraction 0.55] [--workers 1] [--radius-vox 25]

Particles: ``reference_shell_model(mean_radius_vox=R, voxel_size_um=0.128)`` (default R = 25: mean
radius 3.2 µm) and the test grain model (untrained G_net, 0.0018 grains/px³ at 0.05 µm: ~14 grains/µm³).
"""

import argparse
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _cpu() -> float:
    """CPU seconds of this process and of its finished children."""
    r, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


class _Descendants(threading.Thread):
    """Samples the CPU seconds and resident memory of this process's descendants (``/proc``, Linux):
    the workers fork from a fork server, a child of this process, so they are no children of ours and
    ``RUSAGE_CHILDREN`` never sees them. The last sample of each process counts (taken every 0.2 s)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.cpu, self.rss, self.stop = {}, {}, threading.Event()
        self.tick = os.sysconf("SC_CLK_TCK")
        self.page = os.sysconf("SC_PAGE_SIZE")

    def _stat(self):
        out = {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open(f"/proc/{d}/stat") as f:
                        f = f.read().rsplit(")", 1)[1].split()
                    out[int(d)] = (int(f[1]), (int(f[11]) + int(f[12])) / self.tick, int(f[21]) * self.page)
                except (OSError, IndexError, ValueError):
                    pass
        return out

    def run(self):
        me = os.getpid()
        while not self.stop.wait(0.2):
            st = self._stat()
            kids, todo = set(), [me]
            while todo:
                p = todo.pop()
                for q, (pp, _, _) in st.items():
                    if pp == p and q not in kids:
                        kids.add(q)
                        todo.append(q)
            for q in kids:
                self.cpu[q] = st[q][1]
                self.rss[q] = max(self.rss.get(q, 0), st[q][2])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--box-um", type=float, default=40.0)
    ap.add_argument("--fraction", type=float, default=0.55)
    ap.add_argument("--voxel-um", type=float, default=0.1)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--radius-vox", type=float, default=25.0)
    ap.add_argument("--binder", default="bridge")
    ap.add_argument("--skip-baseline", action="store_true")
    a = ap.parse_args()
    from nmc_dataset.pipeline._generate import load_grain_model
    from nmc_dataset.synthetic._ct_phantom import reference_shell_model
    from nmc_dataset.tomography._pack import pack_electrode
    from tests.particles.fixtures import write_models

    with tempfile.TemporaryDirectory() as d:
        _, gp = write_models(Path(d))
        grain = load_grain_model(gp)[0]
    shell = reference_shell_model(mean_radius_vox=a.radius_vox, voxel_size_um=0.128)
    t = time.perf_counter()
    cpu0 = _cpu()
    kids = _Descendants()
    kids.start()
    e = pack_electrode(
        shell,
        grain,
        box_um=a.box_um,
        solid_fraction=a.fraction,
        voxel_size_um=a.voxel_um,
        binder=(a.binder, 0.08),
        seed=4,
        workers=a.workers,
    )
    total = time.perf_counter() - t
    kids.stop.set()
    kids.join()
    cpu = _cpu() - cpu0 + sum(kids.cpu.values())
    info = e.info
    print(
        f"pack {info['box_voxels']}^3: {info['n_particles']} particles, {info['n_grains']} grains; fraction "
        f"{info['solid_fraction']:.4f} (target {a.fraction}); binder {info['binder']['fraction']:.4f}; "
        f"overlap voxels {info['overlap_voxels']}"
    )
    s = info["seconds"]
    print(
        f"  packing {s['pack']:.1f} s (relaxation {s.get('relax', 0):.1f} s, then the exact voxel check), "
        f"particles {s['particles']:.1f} s, binder+labels "
        f"{s['total'] - s['pack'] - s['particles']:.1f} s; total {total:.1f} s (target 60 s: x{total / 60:.2f})"
    )
    print(
        f"  CPU time {cpu:.1f} s (this process + worker processes; wall / CPU = {total / cpu:.2f} with "
        f"--workers {a.workers}: a host shared with other jobs shows here)"
    )
    print(
        f"  relaxation iterations {info['relax_iterations']}, growth steps {info['growth_steps']}, "
        f"shakes {info.get('shakes', 0)}, trimmed {info.get('trimmed', 0)}; exact voxel check: "
        f"{info.get('voxel_rounds', 0)} rounds, {info.get('voxel_pairs_separated', 0)} pairs moved apart"
    )
    print(
        f"  peak memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (main process), "
        f"{max(list(kids.rss.values()) + [resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024]) / 2**30:.2f}"
        f" GiB (largest worker, sampled)"
    )
    print(f"  worker / fork-server processes seen: {len(kids.cpu)}, their CPU {sum(kids.cpu.values()):.1f} s")
    if not a.skip_baseline:
        from scipy import ndimage

        t = time.perf_counter()
        ndimage.distance_transform_edt(e.phase != 1)
        base = time.perf_counter() - t
        print(f"  baseline: one scipy EDT of the volume {base:.1f} s (pack = x{total / base:.2f} of it)")


if __name__ == "__main__":
    main()
