"""Ranking metrics, RecBole's per-user split and full-ranking evaluation.

Every expected value is worked out by hand in the comments next to it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from aistack.errors import SchemaError
from aistack.training.ranking import (
    Interactions,
    evaluate_full_ranking,
    hit,
    hits_at_k,
    item_coverage,
    mean_self_information,
    mrr,
    ndcg,
    precision,
    recall,
    split_counts,
    split_per_user,
    top_k,
)

L3 = 1 / math.log2(3)  # discount at rank 2 = 0.6309...
L4 = 1 / math.log2(4)  # discount at rank 3 = 0.5

# K = 3. Row a: positives at ranks 2 and 3, 4 positives in all.
# Row b: a positive at rank 1, 1 positive. Row c: no hit, 2 positives.
HITS = np.array([[0, 1, 1], [1, 0, 0], [0, 0, 0]], dtype=bool)
N_POS = np.array([4, 1, 2])


def test_hit_is_any_positive_in_the_top_k() -> None:
    assert hit(HITS).tolist() == [1, 1, 0]


def test_recall_divides_by_all_positives_not_by_k() -> None:
    # a: 2 hits / 4 positives; b: 1 / 1; c: 0 / 2
    assert recall(HITS, N_POS).tolist() == [0.5, 1.0, 0.0]


def test_precision_divides_by_k() -> None:
    # a: 2 / 3; b: 1 / 3; c: 0 / 3
    assert precision(HITS) == pytest.approx([2 / 3, 1 / 3, 0.0])


def test_mrr_is_the_reciprocal_rank_of_the_first_hit() -> None:
    # a: first hit at rank 2; b: rank 1; c: none
    assert mrr(HITS).tolist() == [0.5, 1.0, 0.0]


def test_ndcg_ideal_list_holds_min_of_positives_and_k() -> None:
    # a: DCG = 1/log2(3) + 1/log2(4); 4 positives > K, so the ideal holds 3 hits:
    #    IDCG = 1 + 1/log2(3) + 1/log2(4)  ->  1.1309 / 2.1309 = 0.5307
    # b: DCG = 1, 1 positive: IDCG = 1  ->  1
    # c: 0
    expected_a = (L3 + L4) / (1 + L3 + L4)
    assert ndcg(HITS, N_POS) == pytest.approx([expected_a, 1.0, 0.0])
    assert expected_a == pytest.approx(0.530721, abs=1e-6)


def test_ndcg_with_fewer_positives_than_k() -> None:
    # one hit at rank 2, 2 positives: DCG = 1/log2(3); IDCG = 1 + 1/log2(3)
    value = ndcg(np.array([[0, 1, 0]], dtype=bool), np.array([2]))
    assert value == pytest.approx([L3 / (1 + L3)])


def test_top_k_is_best_first_and_breaks_ties_by_index() -> None:
    scores = np.array([[0.1, 0.9, 0.5, 0.9, -np.inf], [3.0, 3.0, 3.0, 3.0, 3.0]])
    assert top_k(scores, 3).tolist() == [[1, 3, 2], [0, 1, 2]]


def test_hits_at_k_looks_up_each_rows_positives() -> None:
    positives = np.array([[0, 0, 1, 1], [1, 0, 0, 0]])
    top = np.array([[2, 0], [1, 0]])
    assert hits_at_k(top, positives).tolist() == [[True, False], [False, True]]


def test_item_coverage_counts_distinct_items_over_the_catalogue() -> None:
    # items 0, 1, 3 appear in some list: 3 of 5
    assert item_coverage(np.array([[0, 1], [1, 3]]), 5) == 0.6


def test_mean_self_information_in_bits() -> None:
    # 4 train users; item 0 held by all 4 -> -log2(4/4) = 0 bits;
    # item 1 by 1 user -> -log2(1/4) = 2 bits; item 2 by nobody -> counted as 1 -> 2
    train = Interactions.from_frame(
        pd.DataFrame({"u": [0, 1, 2, 3, 0], "i": [0, 0, 0, 0, 1]}),
        "u",
        "i",
        items=[0, 1, 2],
    ).matrix
    # user lists: [0, 1] -> (0 + 2) / 2 = 1; [1, 2] -> (2 + 2) / 2 = 2
    assert mean_self_information(np.array([[0, 1], [1, 2]]), train).tolist() == [1, 2]


class FixedScores:
    """Every user scores items 0..4 as 5, 4, 3, 2, 1."""

    def score(self, users: np.ndarray) -> np.ndarray:
        return np.tile(np.arange(5, 0, -1, dtype=float), (len(users), 1))


def frames() -> tuple[Interactions, Interactions, Interactions]:
    ids = {"users": [0, 1, 2], "items": [0, 1, 2, 3, 4]}
    train = pd.DataFrame({"u": [0, 1, 2, 2], "i": [0, 1, 0, 1]})
    valid = pd.DataFrame({"u": [0], "i": [2]})
    test = pd.DataFrame({"u": [0, 0, 1], "i": [2, 3, 4]})
    return tuple(  # type: ignore[return-value]
        Interactions.from_frame(f, "u", "i", **ids) for f in (train, valid, test)
    )


def test_full_ranking_excludes_train_items_and_skips_users_without_positives() -> None:
    train, _, test = frames()
    got = evaluate_full_ranking(FixedScores(), train, test, k=2)
    # user 0 (train {0}): top [1, 2], positives {2, 3}: hits [F, T]
    #   recall 1/2, precision 1/2, mrr 1/2, hit 1,
    #   ndcg = (1/log2 3) / (1 + 1/log2 3) = 0.3869
    # user 1 (train {1}): top [0, 2], positive {4}: no hit, every metric 0
    # user 2: no test positive, not evaluated. Means over users 0 and 1:
    assert got["recall@2"] == 0.25
    assert got["precision@2"] == 0.25
    assert got["mrr@2"] == 0.25
    assert got["hit@2"] == 0.5
    assert got["ndcg@2"] == pytest.approx(L3 / (1 + L3) / 2)
    # items 0, 1, 2 recommended, out of 5
    assert got["itemcoverage@2"] == 0.6
    # train holders: item 0 by 2 of 3 users, 1 by 2, 2 by none (counted as 1):
    # both lists hold one of items 0/1 (log2 3/2) and item 2 (log2 3)
    assert got["novelty@2"] == pytest.approx((math.log2(1.5) + math.log2(3)) / 2)


def test_full_ranking_on_test_also_excludes_the_valid_items() -> None:
    train, valid, test = frames()
    got = evaluate_full_ranking(FixedScores(), train, test, k=2, exclude=(valid,))
    # user 0 now also skips item 2: top [1, 3], hit at rank 2 of positives {2, 3}
    # user 1 unchanged (no valid items): no hit
    assert got["recall@2"] == 0.25
    assert got["ndcg@2"] == pytest.approx(L3 / (1 + L3) / 2)
    assert got["itemcoverage@2"] == 0.8  # items 0, 1, 2, 3


def test_batches_give_the_same_figures() -> None:
    train, _, test = frames()
    whole = evaluate_full_ranking(FixedScores(), train, test, k=2)
    assert evaluate_full_ranking(FixedScores(), train, test, k=2, batch_size=1) == whole


def test_interactions_share_an_index_and_reject_unknown_ids() -> None:
    train, valid, _ = frames()
    assert train.matrix.shape == valid.matrix.shape == (3, 5)
    assert train.matrix.dtype == np.float32
    with pytest.raises(SchemaError, match="column 'i' holds 9"):
        Interactions.from_frame(pd.DataFrame({"u": [0], "i": [9]}), "u", "i", items=[0])


@pytest.mark.parametrize(
    ("total", "expected"),
    [
        # 8:1:1 of 10 -> 8, 1, 1 exactly
        (10, [8, 1, 1]),
        # 25 -> floor(2.5) = 2 for valid and test, the rest (21) to train
        (25, [21, 2, 2]),
        # 5 -> 0.5 each rounds to 0; test then valid take one from train: 3, 1, 1
        (5, [3, 1, 1]),
        # 2 -> test takes one; train is down to 1, so valid gets none
        (2, [1, 0, 1]),
        (1, [1, 0, 0]),
    ],
)
def test_split_counts_round_like_recbole(total: int, expected: list[int]) -> None:
    assert split_counts(np.array([total]), (0.8, 0.1, 0.1)).tolist() == [expected]


def ratings(n_users: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 60, n_users)
    return pd.DataFrame(
        {
            "user": np.repeat(np.arange(n_users), sizes),
            "item": rng.integers(0, 10_000, sizes.sum()),
            "ts": rng.permutation(sizes.sum()),
        }
    )


def test_split_assigns_every_row_once_with_recbole_counts_per_user() -> None:
    frame = ratings()
    parts = split_per_user(frame, "user", seed=7)
    index = np.concatenate([p.index.to_numpy() for p in parts])
    assert np.array_equal(np.sort(index), frame.index.to_numpy())
    sizes = frame.groupby("user").size()
    counts = np.stack(
        [p.groupby("user").size().reindex(sizes.index, fill_value=0) for p in parts],
        axis=1,
    )
    assert np.array_equal(counts, split_counts(sizes.to_numpy(), (0.8, 0.1, 0.1)))


def test_split_is_deterministic_for_a_seed() -> None:
    frame = ratings()
    first = split_per_user(frame, "user", seed=7)
    again = split_per_user(frame, "user", seed=7)
    other = split_per_user(frame, "user", seed=8)
    assert all(a.equals(b) for a, b in zip(first, again, strict=True))
    assert not first[2].equals(other[2])


def test_split_by_time_keeps_each_users_latest_rows_for_test() -> None:
    frame = ratings()
    train, valid, test = split_per_user(frame, "user", order="ts")
    last_train = train.groupby("user")["ts"].max()
    first_later = pd.concat([valid, test]).groupby("user")["ts"].min()
    assert (last_train.reindex(first_later.index) < first_later).all()
    assert (
        valid.groupby("user")["ts"].max().reindex(test["user"].unique()).fillna(-1)
        < test.groupby("user")["ts"].min()
    ).all()
