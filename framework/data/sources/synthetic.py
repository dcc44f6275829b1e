"""synthetic: seeded random 32x32 RGB images of 10 classes, no files: the input pipeline and the
step without any data on disk (--image_size resizes them). Its accuracy means nothing."""

import numpy as np

from framework.data.datasets import ArrayDataset
from framework.data.sources import SOURCES

SHAPE, CLASSES, TRAIN, TEST = (32, 32, 3), 10, 4096, 1024


@SOURCES.register("synthetic")
def synthetic(data_dir, *, seed=0, **options):
    rng = np.random.default_rng([seed, 7])

    def split(n):
        images = rng.integers(0, 256, (n, *SHAPE), dtype=np.uint8)
        return images, rng.integers(0, CLASSES, n).astype(np.int32)

    return ArrayDataset("synthetic", *split(TRAIN), *split(TEST), tuple(map(str, range(CLASSES))))
