"""Data sources, kept apart from the engine: named datasets, image folders, TFRecord shards.

Each returns an `ArrayDataset` of uint8 arrays (train/test, optional validation) or, for files too
large for memory, a `StreamedSplits`; the engine sees only the arrays or the streamed sources
(`framework.controller.Data`). `sources/` names them for `--dataset` (one file per source);
`python -m framework.data.tfrecords` converts any of them to shards.

Names are imported on first use (PEP 562), so that naming a source does not import TensorFlow.
"""

import importlib

_EXPORTS = {
    name: "framework.data.datasets"
    for name in ("ArrayDataset", "DataError", "load", "make_subsets")
}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'framework.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
