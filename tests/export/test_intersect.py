"""All self-intersections of a surface at once: the grid finder against brute-force pair tests."""

import numpy as np
import pytest
import trimesh

from nmc_dataset.export._intersect import self_intersections
from nmc_dataset.testing._export import self_intersections_bruteforce


def _soup(rng):
    """Random triangles in a flattened box (many crossings, few shared vertices)."""
    v = rng.random((60, 3)) * rng.uniform(0.2, 1.0, 3)
    f = rng.integers(0, 60, (50, 3))
    return v, f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])]


def _crumpled_sphere(rng):
    """A closed sphere with noisy vertices: intersections between neighbours sharing a vertex."""
    m = trimesh.creation.icosphere(1)
    return m.vertices + rng.normal(0, 0.2, m.vertices.shape), m.faces


@pytest.mark.parametrize("seed", range(6))
def test_grid_finder_equals_all_pairs(seed):
    rng = np.random.default_rng(seed)
    v, f = (_soup if seed % 2 == 0 else _crumpled_sphere)(rng)
    slow = self_intersections_bruteforce(v, f)
    assert len(slow) > 0
    np.testing.assert_array_equal(self_intersections(v, f), slow)
    # the cell size changes only the candidates (tiny cells: each pair seen in many cells)
    np.testing.assert_array_equal(self_intersections(v, f, cell=0.03), slow)
    np.testing.assert_array_equal(self_intersections(v, f, cell=5.0), slow)
    # restricted to pairs with a marked triangle (the check after a local repair)
    only = rng.random(len(f)) < 0.3
    np.testing.assert_array_equal(self_intersections(v, f, only=only), slow[only[slow].any(axis=1)])


def test_clean_and_known_cases():
    m = trimesh.creation.icosphere(3)
    assert len(self_intersections(m.vertices, m.faces)) == 0
    # two triangles crossing like a plus sign, and a fan pair sharing a vertex folded through each other
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0.2, 0.2, -0.5], [0.3, 0.2, 0.5], [0.2, 0.3, 0.5]], float)
    assert self_intersections(v, [[0, 1, 2], [3, 4, 5]]).tolist() == [[0, 1]]
    v2 = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0.5, 0.1, -0.3], [0.1, 0.5, 0.3]], float)
    assert self_intersections(v2, [[0, 1, 2], [0, 3, 4]]).tolist() == [[0, 1]]
    # the same fan opened up (only the shared vertex in common): nothing
    v2[3, 2] = v2[4, 2] = 0.3
    assert len(self_intersections(v2, [[0, 1, 2], [0, 3, 4]])) == 0
    assert len(self_intersections(v2, np.zeros((0, 3), int))) == 0
