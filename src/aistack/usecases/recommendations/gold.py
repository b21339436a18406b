"""Gold tables of the recommendations use case: pure transforms of silver.

User history (each user's ratings in time order), item popularity over
windows ending at the latest rating, and each movie's TF-IDF content vector.
They span every rating; the platform splits the history per user before
training (so the models see only the train part, as from silver), the content
model reads its vectors from the content table, and the monitor reads item
popularity from the popularity table. The popularity counts hold valid and
test ratings too, so no evaluated model reads them (the popularity model
counts its train split instead).
"""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import polars as pl

from aistack.usecases.recommendations.models import content_vectors

WINDOWS_DAYS = (7, 30, 90)
"""Item popularity windows, in days, ending at the latest rating (included)."""


def user_history(ratings: pl.DataFrame) -> pl.DataFrame:
    """One row per user: counts, first/last time, and the user's `item_id`,
    `rated_at` and `rating` as lists in time order (ties by item): the
    interaction columns of silver ratings, so training reads them back."""
    ordered = ratings.sort("user_id", "rated_at", "item_id")
    return (
        ordered.group_by("user_id", maintain_order=True)
        .agg(
            pl.len().alias("n_ratings"),
            pl.col("rating").mean().alias("mean_rating"),
            pl.col("rated_at").min().alias("first_rated_at"),
            pl.col("rated_at").max().alias("last_rated_at"),
            pl.col("item_id"),
            pl.col("rated_at"),
            pl.col("rating"),
        )
        .with_columns(pl.col("n_ratings").cast(pl.Int64))
    )


def item_popularity(ratings: pl.DataFrame, movies: pl.DataFrame) -> pl.DataFrame:
    """Per movie: ratings in the last 7, 30, 90 days and overall; mean rating.

    Windows are half-open, (as_of - w, as_of], with `as_of` the latest rating's
    time (the data's clock, not the wall clock). Movies nobody rated count 0.
    """
    as_of = ratings["rated_at"].max()
    counts = ratings.group_by("item_id").agg(
        pl.len().cast(pl.Int64).alias("ratings_all"),
        pl.col("rating").mean().alias("mean_rating"),
        *(
            (pl.col("rated_at") > pl.lit(as_of) - timedelta(days=days))
            .sum()
            .cast(pl.Int64)
            .alias(f"ratings_{days}d")
            for days in WINDOWS_DAYS
        ),
    )
    columns = [f"ratings_{d}d" for d in WINDOWS_DAYS] + ["ratings_all"]
    return (
        movies.select("item_id")
        .join(counts, on="item_id", how="left")
        .with_columns(pl.col(columns).fill_null(0), pl.lit(as_of).alias("as_of"))
        .select("item_id", *columns, "mean_rating", "as_of")
        .sort("item_id")
    )


def item_content(movies: pl.DataFrame) -> pl.DataFrame:
    """Per movie: the terms of its TF-IDF vector (title + genre tokens), weights.

    The vector is L2-normalised; terms are listed in vocabulary order.
    """
    frame = movies.sort("item_id").to_pandas().set_index("item_id")
    vectors, terms = content_vectors(frame, ("title",), "genres")
    rows = []
    for row in range(vectors.shape[0]):
        start, end = vectors.indptr[row], vectors.indptr[row + 1]
        order = vectors.indices[start:end].argsort()
        columns = vectors.indices[start:end][order]
        rows.append((terms[columns].tolist(), vectors.data[start:end][order].tolist()))
    return pl.DataFrame(
        {
            "item_id": frame.index.to_numpy(),
            "terms": [r[0] for r in rows],
            "weights": [r[1] for r in rows],
        },
        schema={
            "item_id": pl.Int64,
            "terms": pl.List(pl.String),
            "weights": pl.List(pl.Float64),
        },
    )


def content_frame(movies: pd.DataFrame) -> pd.DataFrame:
    """`item_content` of a pandas movie frame, as pandas: the item frame the
    models get in training, for fitting outside a run (bench, tests)."""
    return item_content(pl.from_pandas(movies)).to_pandas()
