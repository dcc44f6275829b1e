"""MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100 (framework/data/datasets.py finds and decodes their
files: --data_dir, $DATA_DIR, ~/.keras/datasets, then keras.datasets)."""

from framework.data import datasets
from framework.data.sources import SOURCES


def _named(name):
    def load(data_dir, **options):
        return datasets.load(name, data_dir or None)

    load.__qualname__ = f"load_{name}"
    return load


for _name in datasets.DATASETS:
    SOURCES.register(_name)(_named(_name))
