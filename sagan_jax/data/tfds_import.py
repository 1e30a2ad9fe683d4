"""TensorFlow and tensorflow-datasets, imported only where a tfds dataset is prepared or read
(``--dataset=cifar10`` and the anomaly-folder cache). Nothing else in sagan_jax imports them,
so training, scoring, checkpoints and plots run on a machine without TensorFlow."""
from __future__ import annotations

import contextlib
import os


def import_tfds():
    """``tensorflow_datasets``, with TensorFlow kept quiet and off the accelerators (they
    belong to JAX). Raises ImportError when either package is missing."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
    except (RuntimeError, ValueError):  # already initialised: devices can no longer change
        pass
    import tensorflow_datasets as tfds

    return tfds


def tfds_available() -> bool:
    """Whether tensorflow and tensorflow_datasets import (importing them if so)."""
    try:
        import_tfds()
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def progress_bars(enable: bool):
    """tfds' progress bars off for the calls inside when ``enable`` is false (``--noprogress``);
    tfds keeps one switch for the process, which is put back afterwards. With ``enable`` true,
    nothing changes (a caller's own ``tfds.disable_progress_bar()`` holds)."""
    if enable:
        yield
        return
    tfds = import_tfds()
    try:
        from tensorflow_datasets.core.utils import tqdm_utils

        before = bool(getattr(tqdm_utils, "_active", True))
    except ImportError:  # another tfds layout: assume the bars were on
        before = True
    tfds.display_progress_bar(False)
    try:
        yield
    finally:
        tfds.display_progress_bar(before)
