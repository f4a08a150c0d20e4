"""Calibration and fine-tuning data (numpy arrays, loaded from .npz files or image folders)."""

from mdp_trt.data.datasets import ArrayDataset, load_dataset

__all__ = ["ArrayDataset", "load_dataset"]
