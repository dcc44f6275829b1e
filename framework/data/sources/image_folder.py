"""image_folder: one sub-folder of JPEG/PNG files per class under --data_dir (train/ and test/
folders, or one folder split by a seeded fraction): decoded into memory, or streamed from disk
where it is large (--data_in_memory). framework/data/image_folder.py holds the layouts and
checks."""

from framework.data import image_folder as folders
from framework.data import streaming
from framework.data.sources import SOURCES


@SOURCES.register("image_folder", reads_dir=True, streams=True)
def image_folder(
    data_dir,
    *,
    seed,
    image_size=None,
    in_memory="auto",
    on_corrupt="fail",
    max_image_pixels=folders.MAX_IMAGE_PIXELS,
    **options,
):
    kwargs = dict(
        image_size=image_size,
        on_corrupt=on_corrupt,
        max_image_pixels=max_image_pixels,
        seed=seed,
    )
    listed = folders.list_image_folder(data_dir, **kwargs)
    if streaming.choose_in_memory(in_memory, listed.decoded_bytes, f"image_folder {data_dir}"):
        return folders.load_image_folder(data_dir, **kwargs)
    return listed
