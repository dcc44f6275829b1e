"""tfrecords: the shards `python -m framework.data.tfrecords` writes under --data_dir
(train-00000-of-00004.tfrecord, ..., with train.json / test.json): read into memory, or streamed
from disk where they are large (--data_in_memory)."""

from framework.data import streaming
from framework.data import tfrecords as shards
from framework.data.sources import SOURCES


# Streamed records carry no example ids: per-example ops (--alternating_flip) need them in memory.
@SOURCES.register("tfrecords", reads_dir=True, streams=True, example_ids=False)
def tfrecords(data_dir, *, image_size=None, in_memory="auto", **options):
    listed = shards.list_tfrecords(data_dir, image_size=image_size)
    if streaming.choose_in_memory(in_memory, listed.decoded_bytes, f"tfrecords {data_dir}"):
        return shards.load_tfrecord_dataset(data_dir)
    return listed
