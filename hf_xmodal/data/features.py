"""Pre-extracted paired image/text features from user files, and a check for feature datasets."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.io
from datasets import ClassLabel, Dataset, DatasetDict, Features, List, NamedSplit, Value

# Per layout: split -> candidate (image, text, label) key triples; the first present one is used.
_LAYOUTS: dict[str, dict[str, list[tuple[str, str, str]]]] = {
    "I_tr/T_tr/I_te/T_te": {
        "train": [("I_tr", "T_tr", "L_tr")],
        "test": [("I_te", "T_te", "L_te")],
    },
    "train_img/train_txt/test_img/test_txt": {
        "train": [("train_img", "train_txt", "train_lab")],
        "validation": [("val_img", "val_txt", "val_lab"), ("valid_img", "valid_txt", "valid_lab")],
        "test": [("test_img", "test_txt", "test_lab")],
    },
}
_READ_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, scipy.io.matlab.MatReadError)
"""What numpy and scipy raise for a damaged, truncated or empty file."""
_LAYOUT_HELP = (
    "accepted layouts: (1) I_tr, T_tr, I_te, T_te with optional labels L_tr, L_te; "
    "(2) train_img, train_txt, test_img, test_txt with optional labels train_lab, test_lab "
    "and an optional validation split val_img, val_txt[, val_lab] (or valid_*)"
)


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """All arrays of a ``.mat`` / ``.npz`` file or of a folder of ``.npy`` files, by key."""
    if not path.exists():
        raise ValueError(f"feature file or folder not found: '{path}'")
    if path.is_dir():
        files = sorted(path.glob("*.npy"))
        if not files:
            raise ValueError(f"no .npy files in folder '{path}'; {_LAYOUT_HELP}")
        arrays = {}
        for file in files:
            try:
                arrays[file.stem] = np.load(file, allow_pickle=False)
            except _READ_ERRORS as error:
                raise ValueError(
                    f"key '{file.stem}' ({file}): cannot load as a numeric .npy array "
                    f"({_describe(file, error)})"
                ) from error
        return arrays
    suffix = path.suffix.lower()
    if suffix == ".mat":
        try:
            contents = scipy.io.loadmat(path)
        except NotImplementedError as error:
            raise ValueError(
                f"'{path}' is a MATLAB v7.3 (HDF5) file, which is not supported; save it with "
                "save(..., '-v7') or as .npy files"
            ) from error
        except _READ_ERRORS as error:
            raise ValueError(
                f"'{path}': cannot read as a MATLAB (v4-v7) .mat file ({_describe(path, error)})"
            ) from error
        return {key: value for key, value in contents.items() if not key.startswith("__")}
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as contents:
                return {key: contents[key] for key in contents.files}
        except _READ_ERRORS as error:
            raise ValueError(
                f"'{path}': cannot read as a .npz archive of numeric arrays "
                f"({_describe(path, error)})"
            ) from error
    raise ValueError(
        f"unsupported feature file '{path}': expected a .mat or .npz file or a folder of .npy files"
    )


def _describe(path: Path, error: Exception) -> str:
    """The library's complaint, or that the file is empty."""
    if path.stat().st_size == 0:
        return "the file is empty"
    return f"{type(error).__name__}: {error}"


def _select_layout(arrays: dict[str, np.ndarray]) -> dict[str, tuple[str, str, str]]:
    """Split -> (image, text, label) keys present in ``arrays``, for the matching layout."""
    layout = max(
        _LAYOUTS.values(),
        key=lambda layout: sum(
            key in arrays for split in ("train", "test") for key in layout[split][0][:2]
        ),
    )
    missing = [
        key for split in ("train", "test") for key in layout[split][0][:2] if key not in arrays
    ]
    if missing:
        raise ValueError(f"missing key(s) {missing}; found keys {sorted(arrays)}; {_LAYOUT_HELP}")
    selected = {}
    for split, candidates in layout.items():
        present = [keys for keys in candidates if keys[0] in arrays or keys[1] in arrays]
        if len(present) > 1:
            raise ValueError(
                f"both {present[0][:2]} and {present[1][:2]} are present: give one validation split"
            )
        if present:
            image_key, text_key, _ = present[0]
            for key in (image_key, text_key):
                if key not in arrays:
                    raise ValueError(f"missing key '{key}' for the {split} split; {_LAYOUT_HELP}")
            selected[split] = present[0]
    return selected


def _check_numeric(key: str, array: np.ndarray) -> None:
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_) or np.iscomplexobj(
        array
    ):
        raise ValueError(f"key '{key}' has non-numeric dtype {array.dtype}; expected real numbers")
    if array.size == 0:
        raise ValueError(f"key '{key}' is empty (shape {array.shape})")


def _features(key: str, array: np.ndarray) -> np.ndarray:
    """A finite float32 ``(rows, dim)`` matrix."""
    _check_numeric(key, array)
    if array.ndim != 2:
        raise ValueError(f"key '{key}' must be a 2-D (rows x dim) array, got shape {array.shape}")
    with np.errstate(over="ignore"):
        features = array.astype(np.float32)
    n_nan = int(np.isnan(features).sum())
    n_inf = int(np.isinf(features).sum())
    if n_nan or n_inf:
        raise ValueError(
            f"key '{key}' contains {n_nan} NaN and {n_inf} infinite value(s) "
            "(values beyond the float32 range count as infinite)"
        )
    return features


def _labels(key: str, array: np.ndarray, n_rows: int) -> np.ndarray:
    """A 1-D class-index vector or a 2-D label matrix with ``n_rows`` rows."""
    _check_numeric(key, array)
    if array.dtype == np.bool_:
        array = array.astype(np.int64)
    if not np.isfinite(array).all():
        raise ValueError(f"key '{key}' contains NaN or infinite values")
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    elif array.ndim == 2 and array.shape[0] == 1 and n_rows > 1:  # MATLAB row vector
        array = array[0]
    if array.ndim not in (1, 2):
        raise ValueError(f"key '{key}' must be a 1-D or 2-D array, got shape {array.shape}")
    if array.shape[0] != n_rows:
        raise ValueError(
            f"key '{key}' has {array.shape[0]} rows but the features of its split have {n_rows}"
        )
    return array


def _encode_labels(
    labels: dict[str, tuple[str, np.ndarray]],
) -> tuple[str, dict[str, np.ndarray], Value | ClassLabel | List]:
    """Column name, per-split values and feature type for the labels of all splits."""
    is_vector = {key: array.ndim == 1 for key, array in labels.values()}
    if len(set(is_vector.values())) > 1:
        vectors = [key for key, flag in is_vector.items() if flag]
        matrices = [key for key, flag in is_vector.items() if not flag]
        raise ValueError(
            f"labels {vectors} are class-index vectors but {matrices} are label matrices"
        )
    if all(is_vector.values()):
        for key, array in labels.values():
            if not np.array_equal(array, np.round(array)):
                raise ValueError(f"key '{key}' is a 1-D label vector with non-integer values")
        values = np.unique(np.concatenate([array for _, array in labels.values()]).astype(np.int64))
        feature = ClassLabel(names=[str(value) for value in values])
        encoded = {
            split: np.searchsorted(values, array.astype(np.int64))
            for split, (_, array) in labels.items()
        }
        return "label", encoded, feature

    widths = {key: array.shape[1] for key, array in labels.values()}
    if len(set(widths.values())) > 1:
        raise ValueError(f"label matrices have different numbers of columns: {widths}")
    for key, array in labels.values():
        if not np.isin(array, (0, 1)).all():
            raise ValueError(
                f"key '{key}' is a label matrix with values other than 0 and 1; expected a "
                "one-hot or multi-hot matrix (or a 1-D class-index vector)"
            )
    n_classes = next(iter(widths.values()))
    if all((array.sum(axis=1) == 1).all() for _, array in labels.values()):
        encoded = {split: array.argmax(axis=1) for split, (_, array) in labels.items()}
        return "label", encoded, ClassLabel(num_classes=n_classes)
    encoded = {split: array.astype(np.float32) for split, (_, array) in labels.items()}
    return "labels", encoded, List(Value("float32"), length=n_classes)


VALIDATION_SOURCES = ("train", "test")
DEFAULT_VALIDATION_SIZE = 0.1
"""A dataset without a validation split gets this fraction of its train split by default."""


def split_off_validation(
    data: DatasetDict, size: int | float, source: str = "train", seed: int = 0
) -> tuple[DatasetDict, dict]:
    """Move a seeded random part of split `source` ("train" or "test") into a validation split.

    `size` is a number of rows (an int >= 1) or a fraction of the split (a float in (0, 1)).
    Caption data (an `image_index` column) is split by image, so that no image has captions on
    both sides; `size` then counts images, and `image_index` is renumbered within each side.
    Returns the new DatasetDict and a description `{"from", "size", "rows", "seed"}`.
    """
    if "validation" in data:
        raise ValueError("the dataset already has a validation split")
    if source not in VALIDATION_SOURCES:
        raise ValueError(
            f"the validation split comes from one of {VALIDATION_SOURCES}, got {source!r}"
        )
    if source not in data:
        raise ValueError(
            f"no '{source}' split to take a validation split from; it has {list(data)}"
        )
    split = data[source]
    caption = "image_index" in split.column_names
    groups = np.asarray(split["image_index"]) if caption else np.arange(len(split))
    unique = np.unique(groups)
    unit = "images" if caption else "rows"
    if isinstance(size, float) and not float(size).is_integer():
        if not 0 < size < 1:
            raise ValueError(f"a fractional validation size must be in (0, 1), got {size}")
        count = round(size * len(unique))
    else:
        count = int(size)
    if not 0 < count < len(unique):
        raise ValueError(
            f"the validation split must hold between 1 and {len(unique) - 1} {unit} of the "
            f"{source} split ({len(unique)} {unit}), got {count} (from size {size})"
        )
    chosen = np.random.default_rng(seed).choice(unique, count, replace=False)
    in_validation = np.isin(groups, chosen)
    parts = {}
    for name, mask in (("validation", in_validation), (source, ~in_validation)):
        part = split.select(np.flatnonzero(mask))
        if caption:
            renumbered = np.unique(groups[mask], return_inverse=True)[1]
            part = part.remove_columns("image_index").add_column("image_index", renumbered)
        parts[name] = part
    order = ("train", "validation", "test")
    out = DatasetDict({s: parts.get(s, data.get(s)) for s in order if s in parts or s in data})
    info = {"from": source, "size": size, "rows": len(parts["validation"]), "seed": seed}
    if caption:
        info["images"] = count
    return out, info


def load_paired_features(
    path: str | os.PathLike,
    validation_size: int | float | None = None,
    validation_from: str = "train",
) -> DatasetDict:
    """Load paired image/text feature matrices (and optional labels) from user files.

    ``path`` is a ``.mat`` (MATLAB v5/v7) or ``.npz`` file, or a folder of ``<key>.npy`` files,
    holding ``I_tr, T_tr, I_te, T_te`` (+ optional ``L_tr, L_te``) or ``train_img, train_txt,
    test_img, test_txt`` (+ optional ``*_lab`` labels and ``val_*``/``valid_*`` validation
    arrays). Labels may be a 1-D class vector or a one-hot matrix (-> ``label``, a ClassLabel whose
    names are the original values) or a multi-hot matrix (-> ``labels``, float32 vectors).
    Without validation arrays, ``validation_size`` (rows, or a fraction) moves a seeded random
    part of the ``validation_from`` split ("train" or "test") into a validation split
    (:func:`split_off_validation`). Columns: ``image_features``, ``text_features`` (float32) and
    ``label`` or ``labels`` when there are labels.
    """
    arrays = _read_arrays(Path(path))
    keys = _select_layout(arrays)
    if validation_size is not None and "validation" in keys:
        raise ValueError(
            f"validation_size={validation_size} was given but the file already has a validation "
            f"split ({keys['validation'][0]}, {keys['validation'][1]})"
        )

    image, text, labels = {}, {}, {}
    for split, (image_key, text_key, label_key) in keys.items():
        image[split] = _features(image_key, arrays[image_key])
        text[split] = _features(text_key, arrays[text_key])
        n_image, n_text = len(image[split]), len(text[split])
        if n_image != n_text:
            raise ValueError(
                f"{split} split: '{image_key}' has {n_image} rows but '{text_key}' has {n_text}"
            )
        if label_key in arrays:
            labels[split] = (label_key, _labels(label_key, arrays[label_key], n_image))
    for name, matrices, split_keys in (
        ("image", image, {s: k[0] for s, k in keys.items()}),
        ("text", text, {s: k[1] for s, k in keys.items()}),
    ):
        dims = {split_keys[split]: matrix.shape[1] for split, matrix in matrices.items()}
        if len(set(dims.values())) > 1:
            raise ValueError(f"{name} feature dims differ between splits: {dims}")
    if labels and len(labels) != len(keys):
        unlabeled = [keys[split][2] for split in keys if split not in labels]
        raise ValueError(f"labels are given for some splits but key(s) {unlabeled} are missing")

    columns = {
        split: {"image_features": image[split], "text_features": text[split]} for split in keys
    }
    feature_types = {
        "image_features": List(Value("float32"), length=next(iter(image.values())).shape[1]),
        "text_features": List(Value("float32"), length=next(iter(text.values())).shape[1]),
    }
    if labels:
        column, encoded, feature = _encode_labels(labels)
        feature_types[column] = feature
        for split in keys:
            columns[split][column] = encoded[split]

    features = Features(feature_types)
    order = [split for split in ("train", "validation", "test") if split in columns]
    data = DatasetDict(
        {
            split: Dataset.from_dict(columns[split], features=features, split=NamedSplit(split))
            for split in order
        }
    )
    if validation_size is not None:
        data, _ = split_off_validation(data, validation_size, validation_from)
    return data


def _column_values(split: str, dataset: Dataset, column: str) -> tuple[int, np.ndarray]:
    """Row length and flat values of the list column ``column``."""
    prefix = f"split '{split}': " if split else ""
    data = dataset.with_format("arrow")[column]
    if isinstance(data, pa.ChunkedArray):
        data = data.combine_chunks()
    if not (pa.types.is_list(data.type) or pa.types.is_fixed_size_list(data.type)):
        raise ValueError(f"{prefix}column '{column}' must hold feature vectors, got {data.type}")
    if data.null_count:
        raise ValueError(f"{prefix}column '{column}' has {data.null_count} missing rows")
    lengths = np.unique(pc.list_value_length(data).to_numpy(zero_copy_only=False))
    if len(lengths) > 1:
        raise ValueError(f"{prefix}column '{column}' has rows of different lengths {lengths}")
    values = pc.list_flatten(data)
    if not (pa.types.is_floating(values.type) or pa.types.is_integer(values.type)):
        raise ValueError(f"{prefix}column '{column}' has non-numeric values ({values.type})")
    return int(lengths[0]), values.to_numpy(zero_copy_only=False)


def validate_feature_dataset(
    dataset: Dataset | DatasetDict, image_dim: int | None = None, text_dim: int | None = None
) -> tuple[int, int]:
    """Check the ``image_features``/``text_features`` columns of every split; return their dims.

    Raises ValueError for a missing column, an empty split, a feature length other than
    ``image_dim``/``text_dim`` (or differing between splits when they are None) and NaN/inf values.
    """
    splits = dataset.items() if isinstance(dataset, DatasetDict) else [("", dataset)]
    expected = {"image_features": image_dim, "text_features": text_dim}
    for split, data in splits:
        prefix = f"split '{split}': " if split else ""
        for column in expected:
            if column not in data.column_names:
                raise ValueError(
                    f"{prefix}missing column '{column}'; present columns: {data.column_names}"
                )
        if len(data) == 0:
            raise ValueError(f"{prefix}the dataset has no rows")
        for column, dim in expected.items():
            length, values = _column_values(split, data, column)
            if dim is not None and length != dim:
                raise ValueError(
                    f"{prefix}column '{column}' has vectors of length {length}, expected {dim}"
                )
            expected[column] = length
            n_bad = int((~np.isfinite(values)).sum())
            if n_bad:
                raise ValueError(f"{prefix}column '{column}' has {n_bad} NaN or infinite values")
    return expected["image_features"], expected["text_features"]
