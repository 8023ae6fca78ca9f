"""Helpers shared by the dataset loaders."""

from __future__ import annotations

import os
from pathlib import Path

from datasets import DatasetDict, load_from_disk

DATA_ROOT = Path("../shared/data")
"""Default location of the raw data, relative to the current working directory."""


def load_saved_dataset_dict(path: str | os.PathLike) -> DatasetDict | None:
    """Return the DatasetDict saved with ``save_to_disk`` at ``path``, or None if it is not one."""
    path = Path(path)
    if not (path / "dataset_dict.json").is_file():
        return None
    return load_from_disk(str(path))


def require_dir(path: Path, dataset: str) -> None:
    """Raise FileNotFoundError if the raw data folder ``path`` of ``dataset`` is missing."""
    if not path.is_dir():
        raise FileNotFoundError(
            f"{dataset} data folder not found: '{path}' (resolved from the current directory "
            f"'{Path.cwd()}'). Pass data_dir= pointing to the raw {dataset} folder or to a "
            "DatasetDict saved with save_to_disk."
        )


def require_file(path: Path, dataset: str) -> None:
    """Raise FileNotFoundError if the file ``path`` of ``dataset`` is missing."""
    if not path.is_file():
        raise FileNotFoundError(f"{dataset}: expected file '{path}' is missing.")


def format_examples(items: list, limit: int = 5) -> str:
    """Show at most ``limit`` items of a list, with the total count."""
    shown = ", ".join(str(item) for item in items[:limit])
    more = f", ... ({len(items)} in total)" if len(items) > limit else ""
    return f"{shown}{more}"
