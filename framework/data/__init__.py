"""Data sources, kept apart from the engine: named datasets, image folders, TFRecord shards.

Each returns an `ArrayDataset` of uint8 arrays (train/test, optional validation); the engine sees only
the arrays (`framework.controller.Data`). `python -m framework.data.tfrecords` converts any of them.
"""

from framework.data.datasets import ArrayDataset, DataError, load, make_subsets

__all__ = ["ArrayDataset", "DataError", "load", "make_subsets"]
