"""The default training config beats otsu-watershed on its test split (about 10 minutes on 2 cores)."""

from pathlib import Path

import pytest

from nmc_dataset.tomography._training import run_training

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "segmenter.yaml"


@pytest.mark.slow
def test_default_network_beats_otsu_watershed_on_dice_and_instances(tmp_path):
    ev = run_training(RECIPE, tmp_path / "segmenter", device="cpu")
    net, classical = ev["summary"]["net"], ev["summary"]["otsu-watershed"]
    assert net["mean_dice"] > classical["mean_dice"]
    assert net["splits"] + net["merges"] < classical["splits"] + classical["merges"]
