"""Data sources (embedded digits, CIFAR-10, image folders) as in-memory anomaly splits."""
from __future__ import annotations

from sagan_jax.data.base import AnomalyData, DataError, Split, hold_out_validation, subsample_train

__all__ = ["AnomalyData", "DataError", "Split", "load_data"]


def load_data(cfg) -> AnomalyData:
    """The dataset a Config names, with its training subset and validation split applied."""
    if cfg.dataset == "digits":
        from sagan_jax.data.digits import load_digits_anomaly

        data = load_digits_anomaly(cfg.abnormal_class, cfg.isize, cfg.digits_test_fraction, cfg.seed)
    else:
        raise NotImplementedError(f"--dataset={cfg.dataset} is not implemented yet")
    data = subsample_train(data, cfg.max_train_images, cfg.seed)
    data = hold_out_validation(data, cfg.val_fraction, cfg.seed)
    data.log_counts()
    return data
