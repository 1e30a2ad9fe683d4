"""Load an anomaly folder (LBOT or MVTec AD layout, sagan_jax.data.anomaly_folder_read):
decoded with Pillow, or through the tensorflow-datasets cache (sagan_jax.data.anomaly_folder_tfds)
when tensorflow-datasets imports."""
from __future__ import annotations

import logging
import os
from typing import Optional

from sagan_jax.data.anomaly_folder_read import DEFAULT_DATA_DIR, read_folder, scan
from sagan_jax.data.base import AnomalyData
from sagan_jax.data.tfds_import import tfds_available

log = logging.getLogger("sagan_jax")


def load_anomaly_folder(root, isize: int, on_bad_image: str = "error",
                        on_small_image: str = "error", data_dir=None, resize: str = "crop",
                        mask_root=None, cache: Optional[bool] = None,
                        progress: bool = True) -> AnomalyData:
    """An anomaly folder (LBOT or MVTec AD layout); masks, if any, in ``test.masks``.

    ``cache``: None (default) caches through tensorflow-datasets when it imports, else decodes
    with Pillow on every run; True requires tfds; False never uses it. Both give the same
    arrays in the same order. ``progress``: tfds' progress bars while it prepares the cache."""
    layout = scan(root, mask_root)
    if cache is None:
        cache = tfds_available()
        if not cache:
            log.info("tensorflow-datasets does not import: decoding %s with Pillow (no cache)",
                     layout.root)
    if not cache:
        return read_folder(layout, isize, on_bad_image, on_small_image, resize)
    from sagan_jax.data.anomaly_folder_tfds import load_cached  # tensorflow-datasets: optional

    from sagan_jax.data.tfds_import import progress_bars

    with progress_bars(progress):
        return load_cached(layout, isize, on_bad_image, on_small_image, resize,
                           os.path.expanduser(data_dir or DEFAULT_DATA_DIR))
