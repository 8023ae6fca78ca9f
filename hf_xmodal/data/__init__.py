"""Datasets: bundled Wikipedia features, Flickr8k and Fashion loaders, user feature files."""

from .data_collator import XmodalDataCollator
from .fashion import FASHION_SPLITS, fashion_split_ids, load_fashion
from .features import (
    DEFAULT_VALIDATION_SIZE,
    VALIDATION_SOURCES,
    load_paired_features,
    split_off_validation,
    validate_feature_dataset,
)
from .flickr8k import FLICKR8K_FEATURES, load_flickr8k
from .registry import DATASET_NAMES, load_dataset_by_name
from .wikipedia import (
    WIKIPEDIA_CATEGORIES,
    WIKIPEDIA_FEATURES,
    WIKIPEDIA_SPLIT_PROTOCOLS,
    load_wikipedia,
)

__all__ = [
    "DATASET_NAMES",
    "DEFAULT_VALIDATION_SIZE",
    "FASHION_SPLITS",
    "FLICKR8K_FEATURES",
    "VALIDATION_SOURCES",
    "WIKIPEDIA_CATEGORIES",
    "WIKIPEDIA_FEATURES",
    "WIKIPEDIA_SPLIT_PROTOCOLS",
    "XmodalDataCollator",
    "fashion_split_ids",
    "load_dataset_by_name",
    "load_fashion",
    "load_flickr8k",
    "load_paired_features",
    "load_wikipedia",
    "split_off_validation",
    "validate_feature_dataset",
]
