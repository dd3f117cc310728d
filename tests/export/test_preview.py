"""Orientation previews: colour key against spherical-coordinate truths, GLB read back by trimesh,
deterministic rendering."""

from __future__ import annotations

import io

import numpy as np
import pytest

from nmc_dataset.export._preview import (
    NO_ORIENTATION_RGB,
    c_axis_colours,
    coarse_grain_surface,
    orientation_rendering,
    preview_glb,
    radial_frames,
)


def _frames_spherical(x):
    """Slow twin of radial_frames: r, e_theta, e_phi from the polar/azimuthal angles, one grain at a time."""
    out = []
    for p in x:
        r = np.linalg.norm(p)
        th, ph = np.arccos(p[2] / r), np.arctan2(p[1], p[0])
        out.append(
            [
                [np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph), np.cos(th)],
                [np.cos(th) * np.cos(ph), np.cos(th) * np.sin(ph), -np.sin(th)],
                [-np.sin(ph), np.cos(ph), 0.0],
            ]
        )
    return np.asarray(out)


def test_radial_frames_equal_spherical_unit_vectors():
    x = np.random.default_rng(0).normal(size=(200, 3)) * 3.0
    f = radial_frames(x)
    assert np.allclose(f, _frames_spherical(x), atol=1e-12)
    assert np.allclose(np.einsum("nij,nkj->nik", f, f), np.eye(3), atol=1e-12)
    assert np.allclose(np.linalg.det(f), 1.0)
    # on the z-axis and at the centre: still an orthonormal frame
    g = radial_frames(np.array([[0, 0, 2.0], [0, 0, -1.0], [0, 0, 0.0]]))
    assert np.allclose(np.einsum("nij,nkj->nik", g, g), np.eye(3))


def test_colour_key():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 3))
    f = radial_frames(x)
    sign = rng.choice([-1.0, 1.0], size=(50, 1))
    assert (c_axis_colours(sign * f[:, 0], x) == [255, 0, 0]).all()  # c radial: red, either sign
    assert (c_axis_colours(sign * f[:, 1], x) == [0, 255, 0]).all()
    assert (c_axis_colours(sign * f[:, 2], x) == [0, 0, 255]).all()
    mid = (f[:, 0] + f[:, 1]) / np.sqrt(2)
    assert (c_axis_colours(mid, x) == [255, 255, 0]).all()
    assert (c_axis_colours(None, x) == NO_ORIENTATION_RGB).all()
    c = f[:, 0].copy()
    c[3] = np.nan
    col = c_axis_colours(c, x)
    assert (col[3] == NO_ORIENTATION_RGB).all() and (col[4] == [255, 0, 0]).all()


@pytest.fixture(scope="module")
def two_grains():
    """A ball of radius 10 voxels split at x = 0: grain 1 (x < 0), grain 2 (x > 0)."""
    z, y, x = np.mgrid[-12:13, -12:13, -12:13]
    lab = np.where(x**2 + y**2 + z**2 <= 100, np.where(x < 0, 1, 2), 0).astype(np.int32)
    return lab, np.array([-12.0, -12.0, -12.0]) * 0.1, 0.1


def test_glb_reads_back_in_trimesh_with_grain_colours(two_grains):
    import trimesh

    lab, origin, h = two_grains
    surf = coarse_grain_surface(lab, origin, h, 2)
    cols = np.array([[255, 0, 0], [0, 0, 255]], dtype=np.uint8)
    data = preview_glb(surf, cols, {"particle_id": 7})
    scene = trimesh.load(io.BytesIO(data), file_type="glb")
    assert scene.metadata["particle_id"] == 7
    (m,) = scene.geometry.values()
    n_outer = int((surf.pairs == 0).any(axis=1).sum())
    assert len(m.faces) == n_outer
    vc = m.visual.vertex_colors[:, :3]
    left, right = m.vertices[:, 0] < -0.15, m.vertices[:, 0] > 0.05  # the interface lies at x = -0.05
    assert (vc[left] == cols[0]).all() and (vc[right] == cols[1]).all()
    # faces point outwards: the enclosed volume of the outer surface is positive and near the ball's
    p = m.vertices[m.faces].astype(float)
    vol = np.einsum("ij,ij->i", p[:, 0], np.cross(p[:, 1], p[:, 2])).sum() / 6
    assert vol == pytest.approx(4 / 3 * np.pi * 1.0**3, rel=0.1)
    assert len(data) < 200_000


def test_rendering_is_deterministic(two_grains, tmp_path):
    from PIL import Image

    lab, _, h = two_grains
    cols = np.array([[255, 0, 0], [0, 255, 0]], dtype=np.uint8)
    a = orientation_rendering(lab, cols, tmp_path / "a.png", voxel_size_um=h, title="t")
    b = orientation_rendering(lab, cols, tmp_path / "b.png", voxel_size_um=h, title="t")
    assert a.read_bytes() == b.read_bytes()
    im = np.asarray(Image.open(a).convert("RGB")).astype(int)
    # both grain colours appear (shaded), nothing else but white background, legend and title
    red = (im[..., 0] > 80) & (im[..., 1] < 30) & (im[..., 2] < 30)
    green = (im[..., 1] > 80) & (im[..., 0] < 30) & (im[..., 2] < 30)
    assert red.sum() > 2000 and green.sum() > 2000
