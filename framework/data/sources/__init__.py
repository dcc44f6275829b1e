"""Data sources by name (`--dataset`): each registered in its own file of this package.

    @SOURCES.register("my_csv", reads_dir=True)
    def my_csv(data_dir, *, seed, image_size=None, **options) -> ArrayDataset | StreamedSplits:
        ...

A loader returns the whole dataset decoded (an `ArrayDataset` of uint8 arrays: the trainer then
takes the user's subsets of it) or listed for streaming (a `StreamedSplits`, where it chose to
stream: `streaming.choose_in_memory`). It gets `data_dir` ('' where none was given) and the options
`seed`, `image_size` (None: native), `in_memory` ('auto' / 'yes' / 'no'), `on_corrupt`,
`max_image_pixels`, and takes those it uses. An entry declares:
  reads_dir  True where it reads the user's own files from --data_dir (required, and part of the
             run's identity: another folder is another run)
  streams    True where it can stream from disk (--data_in_memory=no applies)
  example_ids  False where its streamed examples carry no id (per-example ops need the arrays)

A new file here is a new `--dataset` name; nothing else lists it.
"""

from framework.registry import Registry

SOURCES = Registry("dataset", package="framework.data.sources")


def load(name: str, data_dir: str = "", **options):
    """What source `name` loads from `data_dir` (ArrayDataset or StreamedSplits); a ConfigError
    for an unknown name, naming the valid ones."""
    return SOURCES.get(name).fn(data_dir, **options)
