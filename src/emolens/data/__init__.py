"""Datasets and label schemas for training and evaluation."""

from emolens.data.datasets import (
    FaceDataset,
    load_dataset,
    load_fer_csv,
    load_image_folder,
    load_labels_csv,
    load_npz_dataset,
    split,
)
from emolens.data.schemas import FER7, FERPLUS8, SIX, canonical, map_labels, schema

__all__ = [
    "FER7",
    "FERPLUS8",
    "SIX",
    "FaceDataset",
    "canonical",
    "load_dataset",
    "load_fer_csv",
    "load_image_folder",
    "load_labels_csv",
    "load_npz_dataset",
    "map_labels",
    "schema",
    "split",
]
