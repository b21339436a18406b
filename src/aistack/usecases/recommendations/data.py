"""MovieLens in RecBole's atomic format: ratings, items and users as pandas frames.

MovieLens-100K ships inside the `recbole` 1.2.1 wheel
(`recbole/dataset_example/ml-100k/ml-100k.inter|.item|.user`); it is found
through the import system without importing `recbole` (its __init__ chain
imports torch, which is not installed). Any folder with the same three files,
named `<folder name>.inter` and so on, reads the same way.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from aistack.errors import ConfigError, SchemaError
from aistack.training.ranking import Interactions, split_per_user

INTER = {
    "user_id": "token",
    "item_id": "token",
    "rating": "float",
    "timestamp": "float",
}
ITEM = {
    "item_id": "token",
    "movie_title": "token_seq",
    "release_year": "token",
    "class": "token_seq",
}
USER = {
    "user_id": "token",
    "age": "token",
    "gender": "token",
    "occupation": "token",
    "zip_code": "token",
}


@dataclass(frozen=True)
class MovieLens:
    """The three tables of a MovieLens data set.

    ratings: user_id, item_id, rating, timestamp (UTC, naive);
    items: item_id, title, release_year (nullable), genres (space-joined);
    users: user_id, age, gender, occupation, zip_code.
    """

    ratings: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame


def ml100k_folder() -> Path:
    """The ml-100k folder inside the installed recbole wheel."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("movielens: the recbole package (data files) is missing")
    return (
        Path(next(iter(spec.submodule_search_locations)))
        / "dataset_example"
        / "ml-100k"
    )


def read_atomic(path: Path, expected: dict[str, str]) -> pd.DataFrame:
    """One RecBole atomic file, checked against the `name: type` columns expected.

    The header is tab-separated `name:type` fields; extra columns are kept.
    Token columns stay strings, float columns must parse as numbers.
    """
    if not path.is_file():
        raise ConfigError(f"movielens: no file {path}")
    with path.open(encoding="utf-8") as handle:
        header = handle.readline().rstrip("\n").split("\t")
    fields = {name: kind for name, _, kind in (f.partition(":") for f in header)}
    wrong = [
        f"column '{name}' is {fields.get(name) or 'missing'}, expected {kind}"
        for name, kind in expected.items()
        if fields.get(name) != kind
    ]
    if wrong:
        raise SchemaError(f"movielens {path.name}: " + "; ".join(wrong))
    frame = pd.read_csv(
        path,
        sep="\t",
        header=0,
        names=list(fields),
        dtype=str,
        keep_default_na=False,
        quoting=3,  # csv.QUOTE_NONE: titles hold quotes
    )
    for name, kind in fields.items():
        if kind == "float":
            frame[name] = _numbers(frame[name], path, name)
    return frame


def _numbers(column: pd.Series, path: Path, name: str) -> pd.Series:
    parsed = pd.to_numeric(column, errors="coerce")
    bad = parsed.isna()
    if bad.any():
        line = int(np.flatnonzero(bad.to_numpy())[0]) + 2  # 1-based, after the header
        raise SchemaError(
            f"movielens {path.name}: column '{name}' line {line} holds "
            f"{column[bad].iloc[0]!r}, expected a number"
        )
    return parsed.astype(np.float64)


def _ids(column: pd.Series) -> pd.Series:
    """Integer ids when every token is an integer, else the tokens as strings."""
    if column.str.fullmatch(r"-?\d+").all():
        return column.astype(np.int64)
    return column


def load_movielens(source: Path | None = None) -> MovieLens:
    """Read ratings, items and users: MovieLens-100K from recbole, or `source`.

    `source` is a folder holding `<name>.inter`, `<name>.item` and `<name>.user`
    with `<name>` the folder's name, in RecBole's atomic format.
    """
    folder = ml100k_folder() if source is None else Path(source)
    stem = folder / folder.name
    inter = read_atomic(stem.with_suffix(".inter"), INTER)
    item = read_atomic(stem.with_suffix(".item"), ITEM)
    user = read_atomic(stem.with_suffix(".user"), USER)
    ratings = pd.DataFrame(
        {
            "user_id": _ids(inter["user_id"]),
            "item_id": _ids(inter["item_id"]),
            "rating": inter["rating"],
            "timestamp": pd.to_datetime(inter["timestamp"], unit="s"),
        }
    )
    items = pd.DataFrame(
        {
            "item_id": _ids(item["item_id"]),
            "title": item["movie_title"],
            "release_year": pd.to_numeric(item["release_year"], errors="coerce").astype(
                "Int64"
            ),
            "genres": item["class"],
        }
    )
    users = pd.DataFrame(
        {
            "user_id": _ids(user["user_id"]),
            "age": _numbers(user["age"], stem.with_suffix(".user"), "age").astype(
                np.int64
            ),
            "gender": user["gender"],
            "occupation": user["occupation"],
            "zip_code": user["zip_code"],
        }
    )
    return MovieLens(ratings, items, users)


def recbole_splits(
    movielens: MovieLens, *, seed: int = 2020, weight: str | None = "rating"
) -> tuple[Interactions, Interactions, Interactions]:
    """Train, valid and test interactions: RecBole's ml-100k protocol.

    RS 8:1:1 per user in random order (RecBole's `eval_args` defaults); every
    rating counts as a positive, since RecBole's ml-100k config sets no
    `threshold` and no `val_interval`. The matrices hold the `weight` column
    (the rating, as the use case declares; None: 1 per rating); metrics read
    any stored entry as a positive. All three share the catalogue's index.
    """
    parts = split_per_user(movielens.ratings, "user_id", (0.8, 0.1, 0.1), seed=seed)
    users = np.sort(movielens.users["user_id"].unique())
    items = np.sort(movielens.items["item_id"].unique())
    train, valid, test = (
        Interactions.from_frame(
            p, "user_id", "item_id", weight, users=users, items=items
        )
        for p in parts
    )
    return train, valid, test
