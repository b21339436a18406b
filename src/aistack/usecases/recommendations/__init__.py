"""Recommendations reference use case: MovieLens, seven models, RecBole's protocol.

Ratings, movies and users land in bronze, then silver under their contracts
(bad rows quarantined, ratings checked against known users and movies), then
gold (user history, item popularity windows, item content vectors). Training
reads the interactions from the gold user history and the item frame from the
gold content vectors; the monitor reads item popularity from gold. Every
model is trained on RecBole's split (each user's ratings in random order, cut
8:1:1), evaluated by full ranking and gated on NDCG@10; the best passing one is
champion, served top-K per user and written for every user in batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandera.polars as pa_pl
import polars as pl
import pyarrow as pa
from pydantic import BaseModel, Field

from aistack.contract import (
    AlertRule,
    Batch,
    GoldTable,
    RankingGates,
    RankingUseCase,
    SilverTable,
    Trainer,
)
from aistack.usecases.recommendations.data import load_movielens
from aistack.usecases.recommendations.gold import (
    item_content,
    item_popularity,
    user_history,
)
from aistack.usecases.recommendations.models import (
    ALS,
    EASE,
    ContentTFIDF,
    Hybrid,
    ItemKNN,
    Popularity,
    UserEASE,
)


class RecommendationParams(BaseModel):
    """Options of `aistack run recommendations`."""

    source: Path | None = Field(
        default=None,
        description="folder of MovieLens files in RecBole's atomic format "
        "(<name>.inter, .item, .user); default: MovieLens-100K from recbole",
    )
    batch_rows: int = Field(default=25_000, ge=100, description="ratings per batch")


def read_sources(params: RecommendationParams, seed: int) -> Iterator[Batch]:
    """Movies, users, then ratings in batches of `batch_rows`."""
    data = load_movielens(params.source)
    name = (params.source or Path("ml-100k")).name
    yield Batch("movies", f"{name}-movies", pa.Table.from_pandas(data.items))
    yield Batch("users", f"{name}-users", pa.Table.from_pandas(data.users))
    ratings = pa.Table.from_pandas(
        data.ratings.rename(columns={"timestamp": "rated_at"}), preserve_index=False
    )
    for start in range(0, ratings.num_rows, params.batch_rows):
        part = ratings.slice(start, params.batch_rows)
        yield Batch("ratings", f"{name}-ratings-{start:07d}", part)


class Movie(pa_pl.DataFrameModel):
    """A movie: id, title, release year (may be unknown), genres (space-joined)."""

    item_id: pl.Int64 = pa_pl.Field(ge=0)
    title: pl.String = pa_pl.Field()
    release_year: pl.Int64 = pa_pl.Field(nullable=True, ge=1800, le=2100)
    genres: pl.String = pa_pl.Field(nullable=True)


class User(pa_pl.DataFrameModel):
    """A user's profile (not used by the models: kept for cold-start analysis)."""

    user_id: pl.Int64 = pa_pl.Field(ge=0)
    age: pl.Int64 = pa_pl.Field(ge=0, le=120)
    gender: pl.String = pa_pl.Field()
    occupation: pl.String = pa_pl.Field()
    zip_code: pl.String = pa_pl.Field()


class Rating(pa_pl.DataFrameModel):
    """One rating of a known movie by a known user."""

    user_id: pl.Int64 = pa_pl.Field(ge=0)
    item_id: pl.Int64 = pa_pl.Field(ge=0)
    rating: pl.Float64 = pa_pl.Field(ge=0.5, le=5.0)
    rated_at: pl.Datetime = pa_pl.Field()


def same(frame: pl.DataFrame) -> pl.DataFrame:
    """MovieLens columns are already named as the contracts."""
    return frame


def _hybrid(seed: int) -> Hybrid:
    return Hybrid(
        [
            ("Popularity", Popularity()),
            ("ItemKNN", ItemKNN()),
            ("ALS", ALS(seed=seed)),
            ("EASE", EASE()),
            ("UserEASE", UserEASE()),
            ("ContentTFIDF", ContentTFIDF()),
        ]
    )


use_case = RankingUseCase(
    name="recommendations",
    description="Movie recommendations: collaborative + content-based hybrid.",
    params=RecommendationParams,
    read_sources=read_sources,
    silver=(
        SilverTable("movies", "movies", same, Movie, key=("item_id",)),
        SilverTable("users", "users", same, User, key=("user_id",)),
        SilverTable(
            "ratings",
            "ratings",
            same,
            Rating,
            key=("user_id", "item_id"),
            references={
                "user_id": "silver.users.user_id",
                "item_id": "silver.movies.item_id",
            },
        ),
    ),
    interactions="silver.ratings",
    items="silver.movies",
    user="user_id",
    item="item_id",
    timestamp="rated_at",
    weight="rating",
    gold=(
        GoldTable(
            "user_history", user_history, {"ratings": "silver.ratings"}, ("user_id",)
        ),
        GoldTable(
            "item_popularity",
            item_popularity,
            {"ratings": "silver.ratings", "movies": "silver.movies"},
            ("item_id",),
        ),
        GoldTable(
            "item_content", item_content, {"movies": "silver.movies"}, ("item_id",)
        ),
    ),
    history="user_history",
    item_features="item_content",
    popularity=("item_popularity", "ratings_all"),
    trainers=(
        Trainer(
            "popularity",
            lambda seed: Popularity(),
            requirements=Popularity.requirements,
        ),
        Trainer("item_knn", lambda seed: ItemKNN(), requirements=ItemKNN.requirements),
        Trainer("als", lambda seed: ALS(seed=seed), requirements=ALS.requirements),
        Trainer("ease", lambda seed: EASE(), requirements=EASE.requirements),
        Trainer(
            "user_ease", lambda seed: UserEASE(), requirements=UserEASE.requirements
        ),
        Trainer(
            "content_tfidf",
            lambda seed: ContentTFIDF(),
            requirements=ContentTFIDF.requirements,
        ),
        Trainer("hybrid", _hybrid, requirements=Hybrid.requirements),
    ),
    alerts=(
        AlertRule("popularity_drift", "popularity_psi", 0.2),
        AlertRule("coverage_drop", "coverage_drop", 0.5),
    ),
    gates=RankingGates(
        primary_metric="ndcg_at_10",
        metric_floors={"ndcg_at_10": 0.1},
        max_latency_ms=20.0,
    ),
)
