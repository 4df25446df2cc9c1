"""``simple_cnn``: a small CNN trained from scratch for small images, with timm's classifier interface."""

from __future__ import annotations

import torch
from torch import nn

# Preprocessing for simple_cnn, which has no pretrained config of its own.
SIMPLE_CNN_CFG = {
    "input_size": (3, 64, 64),
    "mean": (0.5, 0.5, 0.5),
    "std": (0.5, 0.5, 0.5),
    "interpolation": "bilinear",
    "crop_pct": 1.0,
}

class SqueezeExcite(nn.Module):
    """Channel attention: global pool, bottleneck MLP, sigmoid gate."""

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        hidden = max(4, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x):
        scale = x.mean((2, 3), keepdim=True)
        scale = torch.sigmoid(self.fc2(torch.relu(self.fc1(scale))))
        return x * scale


class SimpleCNN(nn.Module):
    """A small CNN for small images trained from scratch: 4 conv stages, optional SE blocks.

    It offers timm's classifier interface (get_classifier/reset_classifier/forward_features) so
    the rest of imgcls treats it like any timm model.
    """

    def __init__(self, num_classes: int = 10, se: bool = False, widths=(32, 64, 128, 256), drop_rate: float = 0.2):
        super().__init__()
        layers, in_ch = [], 3
        for width in widths:
            layers += [
                nn.Conv2d(in_ch, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.Conv2d(width, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            if se:
                layers.append(SqueezeExcite(width))
            layers.append(nn.MaxPool2d(2))
            in_ch = width
        self.features = nn.Sequential(*layers)
        self.num_features = in_ch
        self.drop = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(in_ch, num_classes)
        self.pretrained_cfg = dict(SIMPLE_CNN_CFG, num_classes=num_classes, classifier="classifier")

    def forward_features(self, x):
        return self.features(x)

    def forward_head(self, x, pre_logits: bool = False):
        x = x.mean((2, 3))
        return x if pre_logits else self.classifier(self.drop(x))

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def get_classifier(self):
        return self.classifier

    def reset_classifier(self, num_classes: int):
        self.classifier = nn.Linear(self.num_features, num_classes)
