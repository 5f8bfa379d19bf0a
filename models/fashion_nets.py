"""The two Fashion-MNIST CNNs (edge ~24k params, cloud ~220k params)."""
import torch
from torch import nn


def _block(cin, cout):
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class EdgeNet(nn.Module):
    """3 conv layers + global average pooling + linear: 23,946 parameters (BN folded)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            *_block(1, 16), nn.MaxPool2d(2),  # 14x14
            *_block(16, 32), nn.MaxPool2d(2),  # 7x7
            *_block(32, 64),
            nn.AdaptiveAvgPool2d(1),
        )
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.features(x), 1))


class CloudNet(nn.Module):
    """Wider 3-conv net with a dense layer on the 7x7 map: ~230k parameters."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            *_block(1, 32),
            *_block(32, 32), nn.MaxPool2d(2),  # 14x14
            *_block(32, 64), nn.MaxPool2d(2),  # 7x7
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(0.3), nn.Linear(64 * 7 * 7, 64), nn.ReLU(inplace=True),
            nn.Dropout(0.2), nn.Linear(64, 10),
        )

    def forward(self, x):
        return self.head(self.features(x))
