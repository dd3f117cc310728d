"""The discriminator D: a small CNN on ``(B, C, G, G)`` cutout images (docs/method.md#gan-training).

Blocks of (conv 3x3 + batch-norm + ReLU) x ``convs_per_block`` followed by 2x2 max-pooling,
channel widths doubling from ``width``; then a dense head (``dense`` units, ReLU) and one linear
output (least-squares GAN: no sigmoid).
"""

from __future__ import annotations

from torch import nn


class Discriminator(nn.Module):
    """Small convolutional discriminator.

    Parameters
    ----------
    channels : int
        Input channels (paper: 12).
    grid : int
        Input side length (paper: 32); must be divisible by ``2**blocks``.
    width : int
        Feature maps of the first block (doubled per block).
    blocks : int
        Number of conv blocks, each followed by max-pooling.
    convs_per_block : int
        Conv + BN + ReLU layers per block.
    dense : int
        Units of the hidden dense layer.
    """

    def __init__(
        self,
        channels: int = 12,
        grid: int = 32,
        width: int = 32,
        blocks: int = 3,
        convs_per_block: int = 2,
        dense: int = 128,
    ):
        super().__init__()
        if grid % (2**blocks):
            raise ValueError(f"grid {grid} must be divisible by 2**blocks = {2**blocks}")
        self._config = dict(
            channels=channels, grid=grid, width=width, blocks=blocks, convs_per_block=convs_per_block, dense=dense
        )
        layers = []
        cin = channels
        for b in range(blocks):
            cout = width * 2**b
            for _ in range(convs_per_block):
                layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
                cin = cout
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        side = grid // 2**blocks
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(cin * side * side, dense), nn.ReLU(), nn.Linear(dense, 1))

    def forward(self, x):
        """Scores of a batch of cutout images.

        Parameters
        ----------
        x : (B, channels, grid, grid) tensor
            Cutout images.

        Returns
        -------
        (B,) tensor
            One score per image (least-squares GAN: 1 = measured, 0 = generated).
        """
        return self.head(self.features(x)).squeeze(1)

    def config(self) -> dict:
        """Architecture as a JSON-able dict (``Discriminator(**config)`` rebuilds it)."""
        return dict(self._config)
