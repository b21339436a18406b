"""The seven recommenders on MovieLens-100K from the recbole wheel, and its reader."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from aistack.errors import SchemaError
from aistack.training.ranking import Interactions, evaluate_full_ranking
from aistack.usecases.recommendations.data import (
    MovieLens,
    load_movielens,
    ml100k_folder,
    recbole_splits,
)
from aistack.usecases.recommendations.gold import content_frame
from aistack.usecases.recommendations.models import (
    ALS,
    EASE,
    REQUIREMENTS,
    ContentTFIDF,
    Hybrid,
    ItemKNN,
    Popularity,
    UserEASE,
    normalise_per_user,
    reference_models,
)


@pytest.fixture(scope="module")
def movielens() -> MovieLens:
    return load_movielens()


@pytest.fixture(scope="module")
def splits(movielens: MovieLens) -> tuple[Interactions, Interactions, Interactions]:
    return recbole_splits(movielens)


@pytest.fixture(scope="module")
def content(movielens: MovieLens) -> pd.DataFrame:
    """The gold content table of the movies: the item frame training passes."""
    return content_frame(movielens.items)


@pytest.fixture(scope="module")
def fitted(content: pd.DataFrame, splits: tuple) -> dict[str, object]:
    train, valid, _ = splits
    return {name: model.fit(train, content) for name, model in reference_models(valid)}


@pytest.fixture(scope="module")
def valid_ndcg(fitted: dict, splits: tuple) -> dict[str, float]:
    train, valid, _ = splits
    return {
        name: evaluate_full_ranking(model, train, valid)["ndcg@10"]
        for name, model in fitted.items()
    }


class Random:
    def __init__(self, n_items: int) -> None:
        self.rng = np.random.default_rng(0)
        self.n_items = n_items

    def score(self, users: np.ndarray) -> np.ndarray:
        return self.rng.random((len(users), self.n_items))


def test_the_ml100k_reader_counts(movielens: MovieLens) -> None:
    ratings, items, users = movielens.ratings, movielens.items, movielens.users
    assert len(ratings) == 100_000
    assert ratings["user_id"].nunique() == len(users) == 943
    assert ratings["item_id"].nunique() == len(items) == 1682
    assert list(ratings.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert ratings["timestamp"].dt.tz is None
    assert ratings["timestamp"].min() == pd.Timestamp("1997-09-20 03:05:10")
    assert items.loc[items["item_id"] == 1, "genres"].item() == (
        "Animation Children's Comedy"
    )
    assert set(users.columns) == {"user_id", "age", "gender", "occupation", "zip_code"}


def copy_ml100k(tmp_path, movielens_dir: str = "ml") -> object:
    folder = tmp_path / movielens_dir
    folder.mkdir()
    for suffix in ("inter", "item", "user"):
        text = (ml100k_folder() / f"ml-100k.{suffix}").read_text()
        (folder / f"{movielens_dir}.{suffix}").write_text(text)
    return folder


def test_a_source_folder_reads_the_same(tmp_path, movielens: MovieLens) -> None:
    folder = copy_ml100k(tmp_path)
    assert load_movielens(folder).ratings.equals(movielens.ratings)


def test_a_malformed_value_names_file_column_and_line(tmp_path) -> None:
    folder = copy_ml100k(tmp_path)
    inter = folder / "ml.inter"
    lines = inter.read_text().splitlines()
    lines[3] = "1\t2\tfive\t881250949"
    inter.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        SchemaError, match=r"ml\.inter: column 'rating' line 4 holds 'five'"
    ):
        load_movielens(folder)


def test_a_missing_column_is_named(tmp_path) -> None:
    folder = copy_ml100k(tmp_path)
    item = folder / "ml.item"
    item.write_text(item.read_text().replace("class:token_seq", "genre:token_seq"))
    with pytest.raises(SchemaError, match="column 'class' is missing"):
        load_movielens(folder)


def test_every_model_beats_random_and_collaborative_ones_beat_popularity(
    valid_ndcg: dict[str, float], splits: tuple
) -> None:
    train, valid, _ = splits
    random = evaluate_full_ranking(Random(train.n_items), train, valid)["ndcg@10"]
    assert random < 0.02
    assert all(value > 2 * random for value in valid_ndcg.values()), valid_ndcg
    for name in ("ItemKNN", "ALS", "EASE", "UserEASE", "Hybrid"):
        assert valid_ndcg[name] > valid_ndcg["Popularity"] + 0.05, valid_ndcg


def test_the_hybrid_is_at_least_the_best_single_model_on_valid(
    valid_ndcg: dict[str, float], fitted: dict
) -> None:
    singles = {name: v for name, v in valid_ndcg.items() if name != "Hybrid"}
    assert valid_ndcg["Hybrid"] >= max(singles.values()) - 1e-12
    hybrid = fitted["Hybrid"]
    assert isinstance(hybrid, Hybrid)
    assert hybrid.validation_ndcg_["Hybrid"] == pytest.approx(valid_ndcg["Hybrid"])
    assert set(hybrid.get_params()["components"]) == set(singles)  # type: ignore[arg-type]


def test_scores_are_scaled_over_the_unseen_items_by_hand() -> None:
    """Row [9, 1, 2, 3] with item 0 seen: unseen 1, 2, 3 have mean 2 and
    standard deviation sqrt(2/3); min-max maps them onto 0, 0.5, 1."""
    scores = np.array([[9.0, 1.0, 2.0, 3.0], [5.0, 5.0, 5.0, 5.0]])
    seen = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 0, 0, 0]]))
    z = normalise_per_user(scores, seen)
    np.testing.assert_allclose(z[0], (scores[0] - 2.0) / np.sqrt(2 / 3))
    assert np.array_equal(z[1], np.zeros(4))  # a constant row
    span = normalise_per_user(scores, seen, how="minmax")
    np.testing.assert_allclose(span[0], [4.0, 0.0, 0.5, 1.0])
    assert Hybrid([]).get_params()["normalise"] == "zscore"


def test_fitting_twice_with_a_seed_gives_the_same_scores(splits: tuple) -> None:
    train, _, _ = splits
    users = np.arange(50)
    first, again = (ALS(seed=3).fit(train, None).score(users) for _ in range(2))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, ALS(seed=4).fit(train, None).score(users))


def test_user_ease_beats_popularity_on_valid_and_is_deterministic(
    splits: tuple, valid_ndcg: dict[str, float]
) -> None:
    train, _, _ = splits
    users = np.arange(50)
    first, again = (UserEASE().fit(train, None).score(users) for _ in range(2))
    assert np.array_equal(first, again)
    assert valid_ndcg["UserEASE"] > valid_ndcg["Popularity"] + 0.1
    assert UserEASE(reg=5.0).get_params() == {"reg": 5.0, "power": 0.5}


def test_a_user_without_train_interactions_gets_popularity(
    content: pd.DataFrame, splits: tuple
) -> None:
    train, _, _ = splits
    matrix = train.matrix.tolil()
    matrix[0] = 0
    cold = Interactions(sp.csr_matrix(matrix), train.users, train.items)
    popularity = Popularity().fit(cold, None).score(np.array([0]))
    for name, model in reference_models(None):
        scores = model.fit(cold, content).score(np.array([0, 1]))
        assert scores.shape == (2, cold.n_items), name
        if name != "Hybrid":
            assert np.array_equal(scores[:1], popularity), name
        assert np.isfinite(scores).all(), name


@pytest.mark.parametrize(
    "name",
    ["Popularity", "ItemKNN", "ALS", "EASE", "UserEASE", "ContentTFIDF", "Hybrid"],
)
def test_an_anonymous_session_is_scored_from_its_items(name: str, fitted: dict) -> None:
    model = fitted[name]
    seen = model.score_items(np.array([0, 49, 171]))  # Toy Story, Star Wars, ESB
    empty = model.score_items(np.array([], dtype=np.int64))
    assert seen.shape == empty.shape == (1, 1682)
    assert np.isfinite(seen).all()
    assert np.array_equal(empty, Popularity().fit(model.train_, None).score_items([]))
    if name != "Popularity":
        assert not np.array_equal(seen, empty)


def test_content_needs_the_item_frame(splits: tuple) -> None:
    with pytest.raises(SchemaError, match="ContentTFIDF: the item frame"):
        ContentTFIDF().fit(splits[0], None)


def test_every_model_names_its_requirements_and_params() -> None:
    assert REQUIREMENTS["ALS"] == ("numpy", "scipy", "implicit", "threadpoolctl")
    assert REQUIREMENTS["ContentTFIDF"] == ("numpy", "scipy")  # vectors, no sklearn
    assert EASE(reg=10.0).get_params() == {"reg": 10.0, "power": 0.5}
    assert set(REQUIREMENTS) == {
        "Popularity",
        "ItemKNN",
        "ALS",
        "EASE",
        "UserEASE",
        "ContentTFIDF",
        "Hybrid",
    }


def binary(interactions: Interactions) -> Interactions:
    matrix = sp.csr_matrix((interactions.matrix > 0).astype(np.float32))
    return Interactions(matrix, interactions.users, interactions.items)


def test_the_splits_carry_ratings_and_power_zero_ignores_them(splits: tuple) -> None:
    train, _, _ = splits
    assert set(np.unique(train.matrix.data)) == {1.0, 2.0, 3.0, 4.0, 5.0}
    users = np.arange(30)
    for model in (EASE, UserEASE):
        on_ratings = model(power=0.0).fit(train, None).score(users)
        on_binary = model(power=0.0).fit(binary(train), None).score(users)
        np.testing.assert_allclose(on_ratings, on_binary, atol=1e-9)
        weighted = model().fit(train, None).score(users)
        assert not np.allclose(weighted, on_ratings)
    on_ratings = ALS(power=0.0, seed=1).fit(train, None).score(users)
    on_binary = ALS(power=0.0, seed=1).fit(binary(train), None).score(users)
    assert np.array_equal(on_ratings, on_binary)


def test_the_other_models_ignore_ratings(content: pd.DataFrame, splits: tuple) -> None:
    train, _, _ = splits
    users = np.arange(30)
    for model in (Popularity, ItemKNN, ContentTFIDF):
        on_ratings = model().fit(train, content).score(users)
        on_binary = model().fit(binary(train), content).score(users)
        np.testing.assert_allclose(on_ratings, on_binary, atol=1e-12)


def test_ease_weights_by_rating_power_by_hand() -> None:
    """Two users, two items: X = sqrt(ratings); B by hand from (X'X + I)^-1."""
    ratings = sp.csr_matrix(np.array([[4.0, 1.0], [0.0, 9.0]], np.float32))
    train = Interactions(ratings, np.array([1, 2]), np.array([10, 20]))
    model = EASE(reg=1.0).fit(train, None)
    # X = [[2, 1], [0, 3]]; X'X + I = [[5, 2], [2, 11]]; P = [[11, -2], [-2, 5]] / 51
    # B = P / -diag(P), off-diagonal: B01 = 2/51 / (5/51) = 0.4, B10 = 2/11
    np.testing.assert_allclose(model.weights_, [[0.0, 0.4], [2 / 11, 0.0]])
    # scores X B: user 1 = [1 x 2/11, 2 x 0.4] = [2/11, 0.8]
    np.testing.assert_allclose(model.score(np.array([0])), [[2 / 11, 0.8]])
