"""Top-K ranking for recommenders: interactions, RecBole's per-user split, metrics.

The protocol is RecBole 1.2.1's default (`recbole/properties/overall.yaml`):
`eval_args: {split: {RS: [0.8, 0.1, 0.1]}, group_by: user, order: RO}`, full
ranking over every item the user has not interacted with in the earlier
splits, and the top-K metrics of `recbole/evaluator/metrics.py`, averaged over
the users that have at least one positive in the evaluated split.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Protocol, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp

from aistack.errors import ConfigError, SchemaError

FloatArray = np.ndarray  # float64, one value per user


class Scorer(Protocol):
    """Anything that scores every item for a block of users."""

    def score(self, users: np.ndarray) -> np.ndarray:
        """(len(users), n_items) scores, higher = better; users are train rows."""
        ...


class Recommender(Scorer, Protocol):
    """A recommender the platform fits, evaluates, logs and serves."""

    def fit(self, train: Interactions, items: pd.DataFrame | None) -> Self:
        """Learn from the train interactions (and item metadata when given)."""
        ...

    def score_items(self, item_indices: np.ndarray) -> np.ndarray:
        """(1, n_items) scores for an anonymous session that saw these items."""
        ...

    def get_params(self) -> dict[str, object]:
        """The hyperparameters, for the training key."""
        ...


@dataclass(frozen=True)
class Interactions:
    """A user x item matrix of float32 weights and the external ids of its axes.

    `users[r]` is the id of row r, `items[c]` the id of column c; splits built
    with the same `users` and `items` line up row for row and column for column.
    """

    matrix: sp.csr_matrix
    users: np.ndarray
    items: np.ndarray

    def __post_init__(self) -> None:
        """Check the axes match the matrix."""
        if self.matrix.shape != (len(self.users), len(self.items)):
            raise SchemaError(
                f"interactions: matrix is {self.matrix.shape}, expected "
                f"({len(self.users)}, {len(self.items)}) (users x items)"
            )

    @property
    def n_users(self) -> int:
        """Number of rows (users)."""
        return len(self.users)

    @property
    def n_items(self) -> int:
        """Number of columns (items)."""
        return len(self.items)

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        user: str,
        item: str,
        weight: str | None = None,
        *,
        users: Sequence[Hashable] | np.ndarray | None = None,
        items: Sequence[Hashable] | np.ndarray | None = None,
    ) -> Interactions:
        """Build from one row per interaction; repeated pairs add their weights.

        `users` / `items` fix the index (pass the full catalogue so that train,
        valid and test share it); by default the sorted distinct ids of the frame.
        Weight None counts every interaction as 1.
        """
        missing = [c for c in (user, item, weight) if c and c not in frame.columns]
        if missing:
            raise SchemaError(f"interactions: no column {missing}")
        user_index = _index(frame[user], users, user)
        item_index = _index(frame[item], items, item)
        rows = user_index.get_indexer(pd.Index(frame[user]))
        cols = item_index.get_indexer(pd.Index(frame[item]))
        for name, found in ((user, rows), (item, cols)):
            if (found < 0).any():
                unknown = frame.loc[found < 0, name].tolist()[0]
                raise SchemaError(
                    f"interactions: column '{name}' holds {unknown!r}, which is "
                    "not in the index given"
                )
        data = (
            np.ones(len(frame), np.float32)
            if weight is None
            else frame[weight].to_numpy(np.float32)
        )
        shape = (len(user_index), len(item_index))
        matrix = sp.csr_matrix((data, (rows, cols)), shape=shape, dtype=np.float32)
        matrix.sum_duplicates()
        return cls(matrix, user_index.to_numpy(), item_index.to_numpy())


def _index(
    column: pd.Series, given: Sequence[Hashable] | np.ndarray | None, name: str
) -> pd.Index:
    index = pd.Index(np.sort(column.unique()) if given is None else given)
    if not index.is_unique:
        raise SchemaError(f"interactions: the index given for '{name}' repeats ids")
    return index


def split_counts(totals: np.ndarray, fractions: Sequence[float]) -> np.ndarray:
    """Per group, how many rows go to each part: RecBole's `_calcu_split_ids`.

    Every part but the first gets floor(fraction x n); the first gets the rest.
    Then, from the last part backwards, a part whose exact share is in (0, 1)
    takes one row from the first, as long as the first keeps more than one:
    a user with 5 interactions gets (3, 1, 1) under 8:1:1, one with 2 gets (1, 0, 1),
    one with 25 gets (21, 2, 2). Returns an (n_groups, n_parts) int array.
    """
    total = sum(fractions)  # the same float operations as RecBole, for exact ties
    ratios = [f / total for f in fractions]
    totals = np.asarray(totals, dtype=np.int64)
    exact = np.stack([r * totals for r in ratios], axis=1)
    counts = exact.astype(np.int64)  # int() truncation
    counts[:, 0] = totals - counts[:, 1:].sum(axis=1)
    for part in range(len(ratios) - 1, 0, -1):
        bump = (counts[:, 0] > 1) & (exact[:, part] > 0) & (exact[:, part] < 1)
        counts[bump, part] += 1
        counts[bump, 0] -= 1
    return counts


def split_per_user(
    frame: pd.DataFrame,
    user: str,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    *,
    seed: int = 2020,
    order: str | None = None,
) -> tuple[pd.DataFrame, ...]:
    """Split each user's interactions by ratio: RecBole's RS split, grouped by user.

    RecBole shuffles all interactions (order RO) or sorts them by time (TO),
    then cuts each user's rows in that order with `split_counts`. With
    `order=None` the shuffle is a numpy permutation seeded by `seed` (RecBole's
    is torch's, so the same seed picks other rows, the same way); with a
    column name the rows are sorted by it, ties kept in frame order. Returns one
    frame per fraction (train, valid, test), rows in frame order.
    """
    if user not in frame.columns or (order and order not in frame.columns):
        raise SchemaError(f"split: no column {user!r} or {order!r} in the frame")
    if not fractions or min(fractions) < 0 or sum(fractions) <= 0:
        raise ConfigError(f"split: fractions {fractions!r}, expected non-negative")
    if order is None:
        ordered = np.random.default_rng(seed).permutation(len(frame))
    else:
        ordered = np.argsort(frame[order].to_numpy(), kind="stable")
    codes, _ = pd.factorize(frame[user].to_numpy()[ordered])
    grouped = np.argsort(codes, kind="stable")
    sizes = np.bincount(codes)
    position = np.empty(len(frame), np.int64)
    position[grouped] = np.arange(len(frame)) - np.repeat(
        np.cumsum(sizes) - sizes, sizes
    )
    bounds = np.cumsum(split_counts(sizes, fractions), axis=1)[codes]
    part = (position[:, None] >= bounds).sum(axis=1)
    return tuple(frame.iloc[np.sort(ordered[part == p])] for p in range(len(fractions)))


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's k highest scores, best first; ties by index."""
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    # argpartition picks arbitrarily among ties at the cut: sort those rows fully
    kth = np.take_along_axis(scores, top, axis=1).min(axis=1, keepdims=True)
    tied = (scores >= kth).sum(axis=1) > k
    if tied.any():
        top[tied] = np.argsort(-scores[tied], axis=1, kind="stable")[:, :k]
    picked = np.take_along_axis(scores, top, axis=1)
    return np.take_along_axis(top, np.lexsort((top, -picked)), axis=1)


def hits_at_k(top: np.ndarray, positives: sp.csr_matrix) -> np.ndarray:
    """(users, k) booleans: is the item at rank j of row u a positive of row u."""
    dense = positives.toarray() if sp.issparse(positives) else np.asarray(positives)
    return np.take_along_axis(dense, top, axis=1) > 0


def _ranks(hits: np.ndarray) -> np.ndarray:
    return np.arange(1, hits.shape[1] + 1)


def hit(hits: np.ndarray) -> FloatArray:
    """Hit@K per user: 1 when any of the top K is a positive (RecBole `Hit`)."""
    return np.asarray(hits.any(axis=1), np.float64)


def recall(hits: np.ndarray, n_positives: np.ndarray) -> FloatArray:
    """Recall@K per user: hits in the top K / all the user's positives."""
    return np.asarray(hits.sum(axis=1) / np.asarray(n_positives, np.float64))


def precision(hits: np.ndarray) -> FloatArray:
    """Precision@K per user: hits in the top K / K."""
    return np.asarray(hits.sum(axis=1) / hits.shape[1], np.float64)


def mrr(hits: np.ndarray) -> FloatArray:
    """MRR@K per user: 1 / rank of the first positive in the top K, else 0."""
    first = hits.argmax(axis=1)
    return np.asarray(np.where(hits.any(axis=1), 1.0 / (first + 1), 0.0))


def ndcg(hits: np.ndarray, n_positives: np.ndarray) -> FloatArray:
    """NDCG@K per user, binary gains: DCG / the DCG of min(|positives|, K) hits.

    RecBole's `NDCG`: the ideal list puts min(|R(u)|, K) positives first.
    """
    discounts = 1.0 / np.log2(_ranks(hits) + 1)
    dcg = (hits * discounts).sum(axis=1)
    ideal = np.cumsum(discounts)[np.clip(n_positives, 1, hits.shape[1]) - 1]
    return np.asarray(dcg / ideal, np.float64)


def item_coverage(top: np.ndarray, n_items: int) -> float:
    """ItemCoverage@K: share of the catalogue in at least one user's top K.

    RecBole divides by its item count, which includes its padding item 0;
    here the catalogue is the n_items columns.
    """
    return float(np.unique(top).size / n_items)


def mean_self_information(top: np.ndarray, train: sp.csr_matrix) -> FloatArray:
    """Novelty per user: mean self-information of the top K, in bits.

    Self-information of item i is -log2(n_i / |U|), n_i the train users who
    have i and |U| all train users (Zhou et al. 2010, PNAS 107(10), "novelty");
    an item no train user has counts as n_i = 1. Popular lists score low.
    """
    n_users = max(train.shape[0], 1)
    holders = np.maximum(np.diff(train.tocsc().indptr), 1)
    information = -np.log2(holders / n_users)
    return np.asarray(information[top].mean(axis=1), np.float64)


def _mask(
    block: np.ndarray, rows: np.ndarray, excluded: Sequence[sp.csr_matrix]
) -> None:
    for seen in excluded:
        part = seen[rows].tocoo()
        block[part.row, part.col] = -np.inf


def evaluate_full_ranking(
    model: Scorer,
    train: Interactions,
    test: Interactions,
    k: int = 10,
    *,
    exclude: Sequence[Interactions] = (),
    batch_size: int = 1024,
) -> dict[str, float]:
    """RecBole's full-ranking evaluation of `model` on the positives of `test`.

    Every item is a candidate but those the user has in `train` and in each of
    `exclude` (pass the valid split when evaluating test), which score -inf.
    Users without a positive in `test` are skipped; metrics are means over the
    others. Scores are computed `batch_size` users at a time.
    """
    if test.matrix.shape != train.matrix.shape:
        raise SchemaError(
            f"evaluate: test is {test.matrix.shape}, train {train.matrix.shape}: "
            "build both with the same users and items"
        )
    positives_per_user = np.diff(test.matrix.indptr)
    users = np.flatnonzero(positives_per_user)
    seen = [train.matrix, *(e.matrix for e in exclude)]
    per_user: dict[str, list[FloatArray]] = {}
    tops = []
    for start in range(0, len(users), batch_size):
        rows = users[start : start + batch_size]
        block = np.array(model.score(rows), dtype=np.float64)
        _mask(block, rows, seen)
        top = top_k(block, k)
        hits = hits_at_k(top, test.matrix[rows])
        n_pos = positives_per_user[rows]
        for name, values in (
            ("recall", recall(hits, n_pos)),
            ("mrr", mrr(hits)),
            ("ndcg", ndcg(hits, n_pos)),
            ("hit", hit(hits)),
            ("precision", precision(hits)),
            ("novelty", mean_self_information(top, train.matrix)),
        ):
            per_user.setdefault(name, []).append(values)
        tops.append(top)
    result = {
        f"{name}@{k}": float(np.concatenate(values).mean())
        for name, values in per_user.items()
    }
    result[f"itemcoverage@{k}"] = item_coverage(np.concatenate(tops), train.n_items)
    return result
