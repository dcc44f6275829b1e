"""efficientnet_b0, efficientnetv2_b0: a keras.applications backbone (include_top=False, average
pooled) and a new head. Grey images are repeated to RGB, images under 32 pixels upsampled (the
smallest keras.applications takes); `pretrained` loads the ImageNet weights (Keras' cache, else a
download; offline: WeightsUnavailableError, one line). A frozen backbone (`freeze_backbone`) runs
its BatchNormalization in inference mode, so fine-tuning later does not wreck its statistics."""

import contextlib
import math
import random
import socket

import keras

from framework.data.datasets import DataError
from trainers.models import MODELS

# (keras.applications constructor name, weights file, URL) for include_top=False ImageNet weights.
_V1_URL = "https://storage.googleapis.com/keras-applications/"
_V2_URL = "https://storage.googleapis.com/tensorflow/keras-applications/efficientnet_v2/"
MIN_SIZE = 32  # keras.applications refuses smaller images
_DOWNLOAD_TIMEOUT_S = 60  # per socket operation, so a dead network fails instead of hanging

REFUSES = {
    "widths": "is a keras.applications backbone: its widths cannot be set",
    "activation": "keeps its own activation (swish): leave the activation unset",
}


class WeightsUnavailableError(DataError, RuntimeError):
    """The ImageNet weights of --pretrained cannot be had (offline): one line, exit 2."""


def _builder(constructor, weights_file, base_url):
    def efficientnet(
        layers, input_shape, num_classes, *, name, dropout, freeze_backbone, seed, **options
    ):
        height, width, channels = input_shape
        if channels not in (1, 3):
            raise ValueError(
                f"`input_shape` ({input_shape!r}) must have 1 or 3 channels for {name}"
            )
        pretrained = options.get("pretrained", False)
        if pretrained:
            _fetch_imagenet_weights(name, weights_file, base_url + weights_file)
        inputs = keras.Input(shape=input_shape, name=layers.name("images"))
        x = inputs
        if channels == 1:  # grey -> RGB, as the ImageNet weights expect
            x = keras.layers.Concatenate(name=layers.name("grey_to_rgb"))([x, x, x])
        if min(height, width) < MIN_SIZE:
            # Upsample so the shorter side is 32, keeping the aspect ratio.
            factor = MIN_SIZE / min(height, width)
            height, width = math.ceil(height * factor), math.ceil(width * factor)
            x = keras.layers.Resizing(height, width, name=layers.name("upsample"))(x)
        # The backbones start with their own Rescaling(1/255) + ImageNet normalisation: undo the
        # /255.
        x = keras.layers.Rescaling(255.0, name=layers.name("to_0_255"))(x)

        # keras.applications draws its initializer seeds from Python's `random`: seed it for the
        # build only, then put the caller's random state back.
        saved_state = random.getstate()
        try:
            if seed is not None:
                random.seed(int(seed))
            with _download_timeout():
                backbone = getattr(keras.applications, constructor)(
                    include_top=False,
                    weights="imagenet" if pretrained else None,
                    input_shape=(height, width, 3),
                    pooling="avg",
                )
        except Exception as e:
            # Keras' get_file raises a bare Exception when a download fails (here: the cached file
            # was corrupt, so Keras fetched it again).
            if pretrained and type(e) is Exception:
                raise _weights_error(name, weights_file, base_url + weights_file, e) from e
            raise
        finally:
            random.setstate(saved_state)
        for layer in backbone.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.synchronized = bool(layers.sync_batchnorm)  # read at call time, saved
        if freeze_backbone:
            backbone.trainable = False
        x = backbone(x, training=False) if freeze_backbone else backbone(x)
        if dropout:
            x = layers.dropout(dropout, "head_dropout")(x)
        logits = layers.dense(num_classes, "logits", dtype="float32")(x)
        return keras.Model(inputs, logits, name=layers.name(name))

    return efficientnet


for _name, _args in (
    ("efficientnet_b0", ("EfficientNetB0", "efficientnetb0_notop.h5", _V1_URL)),
    ("efficientnetv2_b0", ("EfficientNetV2B0", "efficientnetv2-b0_notop.h5", _V2_URL)),
):
    MODELS.register(
        _name,
        takes=("pretrained",),
        refuses=REFUSES,
        normalizes_input=True,
    )(_builder(*_args))


def _fetch_imagenet_weights(name, weights_file, url):
    """Puts the weights file in Keras' cache (where keras.applications then finds it) or
    explains."""
    try:
        with _download_timeout():
            keras.utils.get_file(weights_file, url, cache_subdir="models")
    except Exception as e:  # get_file raises a bare Exception on URL failures
        raise _weights_error(name, weights_file, url, e) from e


def _weights_error(name, weights_file, url, error):
    return WeightsUnavailableError(
        f"Could not download the ImageNet weights for {name} ({url}): "
        f"{' '.join(str(error).split())}. To proceed, either run once with internet access (Keras "
        f"caches the file), or copy {weights_file} into ~/.keras/models/ (or $KERAS_HOME/models/), "
        f"or train from scratch without --pretrained (pretrained=False)."
    )


@contextlib.contextmanager
def _download_timeout():
    """Makes a stalled download fail after a while instead of hanging (urllib has no timeout)."""
    saved_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)
    try:
        yield
    finally:
        socket.setdefaulttimeout(saved_timeout)
