"""The recommendations gold transforms on small frames checked by hand."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import polars as pl

from aistack.training.ranking import Interactions
from aistack.usecases.recommendations.gold import (
    item_content,
    item_popularity,
    user_history,
)
from aistack.usecases.recommendations.models import ContentTFIDF, content_vectors

END = datetime(1998, 4, 22, 12)


def ratings(rows: list[tuple[int, int, float, datetime]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows, schema=["user_id", "item_id", "rating", "rated_at"], orient="row"
    )


def test_windows_are_half_open_and_end_at_the_latest_rating() -> None:
    frame = ratings(
        [
            (1, 10, 4.0, END),
            (2, 10, 2.0, END - timedelta(days=7)),  # outside 7d: (end - 7d, end]
            (3, 10, 3.0, END - timedelta(days=7) + timedelta(seconds=1)),
            (1, 11, 5.0, END - timedelta(days=60)),
        ]
    )
    movies = pl.DataFrame({"item_id": [10, 11, 12]})
    got = item_popularity(frame, movies).rows(named=True)
    assert [r["item_id"] for r in got] == [10, 11, 12]
    assert (got[0]["ratings_7d"], got[0]["ratings_30d"], got[0]["ratings_all"]) == (
        2,
        3,
        3,
    )
    assert got[0]["mean_rating"] == 3.0
    assert (got[1]["ratings_30d"], got[1]["ratings_90d"]) == (0, 1)
    assert got[2]["ratings_all"] == 0 and got[2]["mean_rating"] is None
    assert {r["as_of"] for r in got} == {END}


def test_history_is_in_time_order_ties_by_item() -> None:
    frame = ratings(
        [(1, 30, 1.0, END), (1, 20, 2.0, END), (1, 40, 3.0, END - timedelta(1))]
    )
    (row,) = user_history(frame).rows(named=True)
    assert row["item_id"] == [40, 20, 30] and row["rating"] == [3.0, 2.0, 1.0]
    assert row["rated_at"] == [END - timedelta(1), END, END]
    assert row["n_ratings"] == 3 and row["mean_rating"] == 2.0
    assert row["first_rated_at"] == END - timedelta(1) and row["last_rated_at"] == END


def test_content_vectors_are_the_content_models() -> None:
    """The content model fitted on the gold table holds exactly the TF-IDF
    rows of the movies' text, in catalogue order; a movie absent is empty."""
    movies = pl.DataFrame(
        {
            "item_id": [2, 1, 3],
            "title": ["Star Wars (1977)", "Toy Story (1995)", "Toy Soldiers (1991)"],
            "genres": ["Action Sci-Fi", "Animation Comedy", "Action"],
        }
    )
    got = item_content(movies).to_pandas().set_index("item_id")
    assert list(got.index) == [1, 2, 3]
    assert "genre_scifi" in got.loc[2, "terms"]
    train = Interactions.from_frame(
        pd.DataFrame({"user_id": [1], "item_id": [1]}),
        "user_id",
        "item_id",
        items=np.array([1, 2, 3, 4]),
    )
    model = ContentTFIDF().fit(train, got.reset_index())
    text = movies.sort("item_id").to_pandas().set_index("item_id")
    expected, terms = content_vectors(text, ("title",), "genres")
    assert model.vectors_.shape == (4, len(terms))
    assert np.array_equal(model.vectors_[:3].toarray(), expected.toarray())
    assert model.vectors_[3].nnz == 0
