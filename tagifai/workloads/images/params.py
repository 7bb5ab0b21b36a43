"""Image params: the split, the training knobs every network shares, one model per architecture.

Each class is the one source of its defaults (``config/params-images.json`` only
picks the architecture). Sizes have upper bounds, so a config cannot ask for a
network that would not fit in memory.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    model_validator,
)

from tagifai.workloads.base import ArchitectureParams, RunParams

__all__ = ["CnnParams", "ImageData", "ImagesParams", "MinibatchParams", "MlpParams", "ResNetParams"]

Fraction = Annotated[StrictFloat, Field(gt=0, lt=1, allow_inf_nan=False)]


class ImageData(BaseModel):
    """The split and the input size, fixed for a study."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    val_size: Fraction = 0.1  # of the training images, for early stopping, tuning, threshold
    test_size: Fraction = 0.2  # of all images, when the data has no official test set
    # ImageFolder images are resized to image_size x image_size; IDX files and the
    # digits keep their own size.
    image_size: StrictInt = Field(28, ge=4, le=512)

    @model_validator(mode="after")
    def _check(self) -> ImageData:
        if self.val_size + self.test_size >= 1:
            raise ValueError(
                f"val_size + test_size must leave images to train on, "
                f"got {self.val_size} + {self.test_size}"
            )
        return self


class MinibatchParams(ArchitectureParams):
    """Minibatch training, shared by every image network."""

    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    lr: StrictFloat = Field(1e-3, gt=0, le=1, allow_inf_nan=False)
    momentum: StrictFloat = Field(0.9, ge=0, lt=1, allow_inf_nan=False)  # sgd and rmsprop
    weight_decay: StrictFloat = Field(0.0, ge=0, le=1, allow_inf_nan=False)
    batch_size: StrictInt = Field(128, ge=1, le=8192)
    # plateau: cut the lr by lr_factor when validation accuracy stalls for lr_patience
    # epochs; cosine: anneal it to zero over num_epochs.
    lr_schedule: Literal["plateau", "cosine"] = "cosine"
    lr_patience: StrictInt = Field(2, ge=1, le=1_000)
    lr_factor: StrictFloat = Field(0.5, gt=0, lt=1, allow_inf_nan=False)
    # A small CNN epoch over 54k FashionMNIST images takes ~20 s on 2 cores (~70 s with two
    # convs a block): 10 epochs keep a trial to 3-12 minutes, so a 20-minute study sees several.
    num_epochs: StrictInt = Field(10, ge=1, le=1_000)
    patience: StrictInt = Field(3, ge=1, le=1_000)


class MlpParams(MinibatchParams):
    """A multi-layer perceptron on the flattened pixels."""

    architecture: Literal["mlp"] = "mlp"
    activation: Literal["relu", "gelu", "silu", "leaky_relu"] = "relu"
    dropout_p: StrictFloat = Field(0.2, ge=0, lt=1, allow_inf_nan=False)
    num_layers: StrictInt = Field(2, ge=1, le=8)  # hidden layers
    hidden_units: StrictInt = Field(256, ge=4, le=8192)  # units per hidden layer


class CnnParams(MinibatchParams):
    """A small CNN: blocks of ``convs_per_block`` x (conv (+ batch norm), activation) and a
    2x2 max-pool, then a head of an optional hidden layer and the class layer."""

    architecture: Literal["cnn"] = "cnn"
    activation: Literal["relu", "gelu", "silu", "leaky_relu"] = "relu"
    dropout_p: StrictFloat = Field(0.3, ge=0, lt=1, allow_inf_nan=False)  # before each head layer
    head_units: StrictInt = Field(128, ge=0, le=8192)  # a hidden layer before the classes (0: none)
    num_blocks: StrictInt = Field(2, ge=1, le=5)  # each halves the image (while it is 2+ pixels)
    channels: StrictInt = Field(32, ge=4, le=512)  # of the first block; doubled each block
    convs_per_block: StrictInt = Field(1, ge=1, le=3)  # 2: VGG-style, ~3.5x an epoch's time
    kernel_size: Literal[3, 5] = 3
    batch_norm: StrictBool = True
    # Random shifts and small rotations while training: they pay off over more epochs
    # than a CPU study affords, so they are off unless searched or asked for.
    augment: StrictBool = False


class ResNetParams(MinibatchParams):
    """torchvision's ResNet-18 (no pretrained weights), its stem adapted to small grey images."""

    architecture: Literal["resnet18"] = "resnet18"
    augment: StrictBool = True


ImageModel = Annotated[MlpParams | CnnParams | ResNetParams, Field(discriminator="architecture")]


class ImagesParams(RunParams):
    """Everything needed to split the images, build a network and train it."""

    task: Literal["images"] = "images"
    data: ImageData = ImageData()
    model: ImageModel = CnnParams()
    # predict abstains below the lowest confidence at which validation predictions are
    # at least this accurate (0: never abstain).
    confidence_target: StrictFloat = Field(0.99, ge=0, le=1, allow_inf_nan=False)
