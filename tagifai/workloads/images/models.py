"""Image networks (an MLP, a small CNN, torchvision's ResNet-18) and the pixel encoder."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from tagifai.workloads.base import Encoder
from tagifai.workloads.images.conform import BACKGROUNDS, Background, training_background
from tagifai.workloads.images.data import MAX_IMAGE_SIDE as MAX_SIDE
from tagifai.workloads.images.params import CnnParams, ImagesParams, MlpParams

__all__ = ["ImageEncoder", "build_model"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
}


class ImageEncoder:
    """Grey uint8 images ``(H, W)`` to normalised float tensors ``(N, 1, H, W)``.

    Args:
        height: Image height the network takes.
        width: Image width.
        mean: Mean pixel of the training images (0..1 scale).
        std: Standard deviation of their pixels.
        background: The training images' background, ``"dark"`` or ``"light"``, what
            predict conforms incoming images to; ``None`` when they share none, or for a
            model saved before it was recorded (predict then leaves polarity alone).
    """

    def __init__(
        self,
        height: int,
        width: int,
        mean: float,
        std: float,
        background: Background | None = None,
    ) -> None:
        self.height = height
        self.width = width
        self.mean = mean
        self.std = std
        self.background = background

    @classmethod
    def fit(cls, images: np.ndarray) -> ImageEncoder:
        """Size, pixel statistics and background of the training images ``(N, H, W)``."""
        scaled = images.astype(np.float64) / 255.0
        return cls(
            images.shape[1],
            images.shape[2],
            float(scaled.mean()),
            float(scaled.std()),
            training_background(images),
        )

    def encode(self, inputs: list[Any] | np.ndarray) -> np.ndarray:
        """``(N, 1, H, W)`` float32 of images already at the network's size."""
        stack = np.stack(list(inputs)) if not isinstance(inputs, np.ndarray) else inputs
        x = (stack.astype(np.float32) / 255.0 - self.mean) / max(self.std, 1e-6)
        return x[:, None, :, :].astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """JSON state."""
        return {
            "kind": "image",
            "height": self.height,
            "width": self.width,
            "mean": self.mean,
            "std": self.std,
            "background": self.background,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> ImageEncoder:
        """Restore from :meth:`to_dict`, within the bounds of the images it was fitted on.

        Raises:
            ValueError: If a size is not an integer in ``1..MAX_IMAGE_SIDE``, a statistic
                is not a finite number in its range, or the background is not ``"dark"``,
                ``"light"`` or null (absent: a model saved before it was recorded).
        """
        sides = [state.get("height"), state.get("width")]
        for side in sides:
            if isinstance(side, bool) or not isinstance(side, int) or not 1 <= side <= MAX_SIDE:
                raise ValueError(f"image size {sides!r:.40} must be two integers in 1..{MAX_SIDE}")
        mean, std = state.get("mean"), state.get("std")
        for name, value in (("mean", mean), ("std", std)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} {value!r:.40} must be a number")
            if not 0.0 <= value <= 1.0:  # pixels scaled to 0..1; NaN fails too
                raise ValueError(f"{name} {value!r:.40} must be within [0, 1]")
        background = state.get("background")
        if background is not None and background not in BACKGROUNDS:
            raise ValueError(f"background {background!r:.40} must be 'dark', 'light' or null")
        height, width = int(sides[0]), int(sides[1])  # type: ignore[arg-type]
        return cls(height, width, float(mean), float(std), background)  # type: ignore[arg-type]


def _mlp(arch: MlpParams, pixels: int, num_classes: int) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    width = pixels
    for _ in range(arch.num_layers):
        layers += [
            nn.Linear(width, arch.hidden_units),
            ACTIVATIONS[arch.activation](),
            nn.Dropout(arch.dropout_p),
        ]
        width = arch.hidden_units
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def _cnn(arch: CnnParams, height: int, width: int, num_classes: int) -> nn.Module:
    layers: list[nn.Module] = []
    channels_in, channels = 1, arch.channels
    for _ in range(arch.num_blocks):
        for conv in range(arch.convs_per_block):
            layers.append(
                nn.Conv2d(
                    channels_in if conv == 0 else channels,
                    channels,
                    arch.kernel_size,
                    padding=arch.kernel_size // 2,
                )
            )
            if arch.batch_norm:
                layers.append(nn.BatchNorm2d(channels))
            layers.append(ACTIVATIONS[arch.activation]())
        if min(height, width) >= 2:  # small images (8x8 digits) stop shrinking at 1 pixel
            layers.append(nn.MaxPool2d(2))
            height, width = height // 2, width // 2
        channels_in, channels = channels, min(channels * 2, 1024)
    features = channels_in * height * width
    layers.append(nn.Flatten())
    if arch.head_units:
        layers += [
            nn.Dropout(arch.dropout_p),
            nn.Linear(features, arch.head_units),
            ACTIVATIONS[arch.activation](),
        ]
        features = arch.head_units
    layers += [nn.Dropout(arch.dropout_p), nn.Linear(features, num_classes)]
    return nn.Sequential(*layers)


def _resnet18(num_classes: int) -> nn.Module:
    """ResNet-18 for small grey images: a 3x3 stride-1 stem on one channel, no stem max-pool."""
    from torchvision.models import resnet18

    model = resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def build_model(params: ImagesParams, encoder: Encoder, num_classes: int) -> nn.Module:
    """The untrained network of ``params.model`` for the encoder's image size."""
    assert isinstance(encoder, ImageEncoder)
    arch = params.model
    if isinstance(arch, MlpParams):
        return _mlp(arch, encoder.height * encoder.width, num_classes)
    if isinstance(arch, CnnParams):
        return _cnn(arch, encoder.height, encoder.width, num_classes)
    return _resnet18(num_classes)


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the classes."""
    return torch.softmax(logits, dim=1)
