"""The validation split of a run: the dataset's own, or one carved from train or test."""

from datasets import DatasetDict

from ..data import DEFAULT_VALIDATION_SIZE, VALIDATION_SOURCES, split_off_validation

VALIDATION_HELP = (
    "rows (an integer) or a fraction (e.g. 0.1) of the --validation_from split moved into a "
    f"validation split, for a dataset without one (default: {DEFAULT_VALIDATION_SIZE} of train, "
    "seed 0); 0: no validation split"
)


def parse_validation_size(text: str | None) -> int | float | None:
    """`--validation_size`: None, a row count ("200") or a fraction ("0.1")."""
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise SystemExit(
            f"--validation_size must be a number of rows or a fraction, got {text!r}"
        ) from None


def with_validation(
    data: DatasetDict, validation_size: str | None, validation_from: str | None
) -> tuple[DatasetDict, dict | None]:
    """`data` with a validation split, and how it was made (None: the dataset's own, or none).

    A dataset that has one keeps it (giving `--validation_size`/`--validation_from` then is an
    error); otherwise a seeded part of `validation_from` (default train) becomes one, of
    `validation_size` (default 10%); `--validation_size 0` leaves the dataset without one.
    """
    size = parse_validation_size(validation_size)
    if validation_from is not None and validation_from not in VALIDATION_SOURCES:
        raise SystemExit(
            f"--validation_from must be one of {VALIDATION_SOURCES}, got {validation_from!r}"
        )
    if "validation" in data:
        if size is not None or validation_from is not None:
            raise SystemExit(
                "the dataset has its own validation split: drop --validation_size and "
                "--validation_from"
            )
        return data, None
    if size == 0:
        return data, None
    size = DEFAULT_VALIDATION_SIZE if size is None else size
    try:
        data, info = split_off_validation(data, size, validation_from or "train")
    except ValueError as error:
        raise SystemExit(f"--validation_size / --validation_from: {error}") from None
    return data, info


def describe_validation(info: dict) -> str:
    """One log line saying where the validation split came from."""
    images = f" ({info['images']} images)" if "images" in info else ""
    return (
        f"validation split: {info['rows']} rows{images} of the {info['from']} split "
        f"(--validation_size {info['size']}, seed {info['seed']}), the dataset having none"
    )


def require_splits(data: DatasetDict, splits: tuple[str, ...]) -> None:
    """Stop with a message naming the option that makes a missing split."""
    missing = [s for s in splits if s not in data]
    if missing:
        hint = (
            "; --validation_size N|fraction [--validation_from train|test] makes one"
            if "validation" in missing
            else ""
        )
        raise SystemExit(f"the dataset lacks the split(s) {missing}; it has {list(data)}{hint}")
