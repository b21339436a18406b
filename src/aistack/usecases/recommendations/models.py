"""Seven recommenders behind the platform's `Recommender` protocol.

Each keeps its constructor arguments as they are (scikit-learn style), learns in
`fit` into attributes ending in `_`, and names the pip packages it needs in
`requirements`. A user with no train interaction, or an anonymous session with
no seen item, gets the popularity scores (the cold-start path).

Default hyperparameters were set by hand on the validation split of ML-100K
(RecBole's RS 8:1:1 per user, seed 2020), never on its test split.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import ClassVar, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from sklearn.feature_extraction.text import TfidfVectorizer
from threadpoolctl import threadpool_limits

from aistack.errors import NotFittedError, SchemaError
from aistack.training.ranking import (
    Interactions,
    Recommender,
    hits_at_k,
    ndcg,
    top_k,
)


class _Base:
    """Shared fit/score plumbing: popularity fallback, params, fitted checks."""

    requirements: ClassVar[tuple[str, ...]] = ("numpy", "scipy")

    def fit(self, train: Interactions, items: pd.DataFrame | None = None) -> Self:
        """Learn from `train` (users x items); `items` is item metadata, if any."""
        self.train_ = train
        self.popularity_ = np.asarray(
            (train.matrix > 0).sum(axis=0), np.float64
        ).ravel()
        self._fit(train, items)
        return self

    def _fit(self, train: Interactions, items: pd.DataFrame | None) -> None:
        """Model-specific learning; the base has nothing to learn."""

    def _score_rows(self, rows: sp.csr_matrix, users: np.ndarray | None) -> np.ndarray:
        """Scores for interaction rows; `users` are their train rows, None if new."""
        raise NotImplementedError

    def score(self, users: np.ndarray) -> np.ndarray:
        """(len(users), n_items) scores for train rows `users`, higher = better."""
        train = self._fitted()
        users = np.asarray(users, np.int64)
        rows = train.matrix[users]
        return self._with_fallback(self._score_rows(rows, users), rows)

    def score_items(self, item_indices: np.ndarray) -> np.ndarray:
        """(1, n_items) scores for an anonymous session that saw these items."""
        train = self._fitted()
        columns = np.unique(np.asarray(item_indices, np.int64))
        row = sp.csr_matrix(
            (np.ones(len(columns), np.float32), columns, [0, len(columns)]),
            shape=(1, train.n_items),
        )
        return self._with_fallback(self._score_rows(row, None), row)

    def _with_fallback(self, scores: np.ndarray, rows: sp.csr_matrix) -> np.ndarray:
        scores = np.array(scores, dtype=np.float64)
        scores[np.diff(rows.indptr) == 0] = self.popularity_
        return scores

    def _fitted(self) -> Interactions:
        if not hasattr(self, "train_"):
            raise NotFittedError(f"{type(self).__name__}: call fit before scoring")
        train: Interactions = self.train_
        return train

    def get_params(self) -> dict[str, object]:
        """The constructor arguments, by name (the hyperparameters)."""
        names = inspect.signature(type(self).__init__).parameters
        return {name: getattr(self, name) for name in names if name != "self"}


class Popularity(_Base):
    """Scores an item by how many train users interacted with it."""

    def __init__(self) -> None:
        """No hyperparameter."""

    def _score_rows(self, rows: sp.csr_matrix, users: np.ndarray | None) -> np.ndarray:
        return np.tile(self.popularity_, (rows.shape[0], 1))


def _binary(train: Interactions) -> sp.csr_matrix:
    matrix: sp.csr_matrix = (train.matrix > 0).astype(np.float64)
    return matrix


class ItemKNN(_Base):
    """Item-based k-nearest neighbours on cosine similarity (RecBole's ItemKNN).

    sim(i, j) = |U_i & U_j| / (sqrt|U_i| sqrt|U_j| + shrink); each item keeps its
    `k` most similar other items; a user's score for j sums sim(i, j) over the
    items i they have. The item x item matrix is dense while fitting.
    """

    def __init__(self, k: int = 200, shrink: float = 20.0) -> None:
        """k: neighbours kept per item; shrink: added to the cosine denominator."""
        self.k = k
        self.shrink = shrink

    def _fit(self, train: Interactions, items: pd.DataFrame | None) -> None:
        matrix = _binary(train)
        overlap = (matrix.T @ matrix).toarray()
        norms = np.sqrt(np.diag(overlap))
        similarity = overlap / (np.outer(norms, norms) + self.shrink + 1e-6)
        np.fill_diagonal(similarity, 0.0)
        k = min(self.k, train.n_items - 1)
        keep = np.argpartition(-similarity, k - 1, axis=0)[:k]  # per target column
        columns = np.broadcast_to(np.arange(train.n_items), keep.shape)
        weights = similarity[keep, columns]
        self.similarity_ = sp.csr_matrix(
            (weights.ravel(), (keep.ravel(), columns.ravel())),
            shape=similarity.shape,
        )

    def _score_rows(self, rows: sp.csr_matrix, users: np.ndarray | None) -> np.ndarray:
        return np.asarray((rows @ self.similarity_).toarray())


class EASE(_Base):
    """Embarrassingly shallow autoencoder (Steck 2019), closed form in numpy.

    B = I - P diagMat(1 / diag(P)), P = (X'X + lambda I)^-1, diagonal of B zero;
    scores are X B. Memory: one dense item x item matrix.
    """

    def __init__(self, reg: float = 700.0) -> None:
        """reg: the L2 weight lambda (RecBole's `reg_weight` defaults to 250)."""
        self.reg = reg

    def _fit(self, train: Interactions, items: pd.DataFrame | None) -> None:
        matrix = _binary(train)
        gram = (matrix.T @ matrix).toarray()
        gram[np.diag_indices_from(gram)] += self.reg
        inverse = np.linalg.inv(gram)
        weights = inverse / -np.diag(inverse)
        np.fill_diagonal(weights, 0.0)
        self.weights_ = weights

    def _score_rows(self, rows: sp.csr_matrix, users: np.ndarray | None) -> np.ndarray:
        return np.asarray(rows @ self.weights_)


class UserEASE(_Base):
    """EASE on the transposed matrix: each user is rebuilt from the other users.

    C = I - P diagMat(1 / diag(P)), P = (XX' + lambda I)^-1, diagonal of C zero;
    scores are C'X. It sees user-user structure the item models miss, which
    helps the hybrid. A new session x is regressed on the train users without
    the zero-diagonal constraint: scores x X'P X. Memory: users x users, dense.
    """

    def __init__(self, reg: float = 1000.0) -> None:
        """reg: the L2 weight lambda on the user-user gram matrix."""
        self.reg = reg

    def _fit(self, train: Interactions, items: pd.DataFrame | None) -> None:
        matrix = _binary(train)
        gram = (matrix @ matrix.T).toarray()
        gram[np.diag_indices_from(gram)] += self.reg
        inverse = np.linalg.inv(gram)
        weights = inverse / -np.diag(inverse)
        np.fill_diagonal(weights, 0.0)
        self.matrix_ = matrix
        self.inverse_ = inverse
        self.weights_ = weights

    def _score_rows(self, rows: sp.csr_matrix, users: np.ndarray | None) -> np.ndarray:
        if users is None:
            overlap = (rows @ self.matrix_.T).toarray()  # session x train users
            coefficients = overlap @ self.inverse_
        else:
            coefficients = self.weights_[:, users].T
        return np.asarray(self.matrix_.T @ coefficients.T).T


class ALS(_Base):
    """Implicit-feedback matrix factorisation (Hu, Koren, Volinsky 2008).

    `implicit.cpu.als.AlternatingLeastSquares`, seeded, on `threads` threads with
    BLAS kept to one thread (implicit's advice). A new session's factors are
    solved from its items with the item factors fixed.
    """

    requirements = ("numpy", "scipy", "implicit", "threadpoolctl")

    def __init__(
        self,
        factors: int = 16,
        regularization: float = 5.0,
        *,
        alpha: float = 1.0,
        iterations: int = 15,
        seed: int = 0,
        threads: int = 1,
    ) -> None:
        """factors: latent size; alpha: confidence scale; threads: 1 or 2."""
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.seed = seed
        self.threads = threads

    def _fit(self, train: Interactions, items: pd.DataFrame | None) -> None:
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(
                factors=self.factors,
                regularization=self.regularization,
                alpha=self.alpha,
                iterations=self.iterations,
                random_state=self.seed,
                num_threads=self.threads,
            )
            model.fit(train.matrix, show_progress=False)
        self.model_ = model

    def _score_rows(self, rows: sp.csr_matrix, users: np.ndarray | None) -> np.ndarray:
        if users is None:
            factors = np.atleast_2d(self.model_.recalculate_user(0, rows))
        else:
            factors = self.model_.user_factors[users]
        return np.asarray(factors @ self.model_.item_factors.T)


class ContentTFIDF(_Base):
    """Content-based: TF-IDF of title and genres, cosine to the user's profile.

    A user's profile is the interaction-weighted mean of the TF-IDF vectors of
    the items they have. Genres become single tokens (`genre_scifi`), so a
    genre never matches a title word. Items without metadata score 0.
    """

    requirements = ("numpy", "scipy", "scikit-learn")

    def __init__(
        self,
        item_column: str = "item_id",
        text_columns: Sequence[str] = ("title",),
        *,
        genre_column: str | None = "genres",
        min_df: int = 1,
    ) -> None:
        """The item frame's id, text and genre columns; min_df: vocabulary cut."""
        self.item_column = item_column
        self.text_columns = text_columns
        self.genre_column = genre_column
        self.min_df = min_df

    def _fit(self, train: Interactions, items: pd.DataFrame | None) -> None:
        columns = [self.item_column, *self.text_columns]
        columns += [self.genre_column] if self.genre_column else []
        missing = [c for c in columns if items is None or c not in items.columns]
        if items is None or missing:
            raise SchemaError(
                f"ContentTFIDF: the item frame has no column {missing}, "
                f"expected {columns}"
            )
        frame = items.drop_duplicates(self.item_column).set_index(self.item_column)
        frame = frame.reindex(pd.Index(train.items))  # catalogue order
        text = pd.Series("", index=frame.index)
        for column in self.text_columns:
            text = text + " " + frame[column].fillna("").astype(str)
        if self.genre_column:
            genres = frame[self.genre_column].fillna("").astype(str)
            tokens = genres.str.replace(r"[^\w\s|]", "", regex=True).str.lower()
            text = (
                text + " " + tokens.str.replace(r"([^\s|]+)", r"genre_\1", regex=True)
            )
        vectorizer = TfidfVectorizer(min_df=self.min_df)
        self.vectors_ = sp.csr_matrix(vectorizer.fit_transform(text.to_numpy()))

    def _score_rows(self, rows: sp.csr_matrix, users: np.ndarray | None) -> np.ndarray:
        profiles = np.asarray((rows @ self.vectors_).toarray())
        norms = np.linalg.norm(profiles, axis=1, keepdims=True)
        profiles /= np.where(norms > 0, norms, 1.0)
        return np.asarray((self.vectors_ @ profiles.T).T)


def normalise_per_user(scores: np.ndarray, seen: sp.csr_matrix) -> np.ndarray:
    """Min-max each row to [0, 1] over the items the user has not seen.

    Seen items are ranked out anyway; leaving them in would let one huge
    score (EASE on a train item) squash the rest. A constant row becomes 0.
    """
    candidates = np.array(scores, dtype=np.float64)
    coo = seen.tocoo()
    candidates[coo.row, coo.col] = np.nan
    low = np.nanmin(candidates, axis=1, keepdims=True)
    span = np.nanmax(candidates, axis=1, keepdims=True) - low
    span[~(span > 0)] = np.inf
    return np.asarray((scores - low) / span)


class Hybrid(_Base):
    """A weighted blend of other models' per-user min-max normalised scores.

    The weights maximise NDCG@k on `validation` (never the test split) by
    coordinate ascent over `grid`, starting from the best single model with
    weight 1, so on validation the blend is never below its best component.
    Without validation every component weighs 1.
    """

    requirements = ("numpy", "scipy", "implicit", "threadpoolctl", "scikit-learn")

    def __init__(
        self,
        components: Sequence[tuple[str, Recommender]],
        validation: Interactions | None = None,
        *,
        grid: Sequence[float] = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0),
        sweeps: int = 2,
        k: int = 10,
    ) -> None:
        """components: (name, unfitted model) pairs; validation: held-out positives."""
        self.components = components
        self.validation = validation
        self.grid = grid
        self.sweeps = sweeps
        self.k = k

    def fit(
        self,
        train: Interactions,
        items: pd.DataFrame | None = None,
        valid: Interactions | None = None,
    ) -> Self:
        """Fit the components on `train`; learn the blend on `valid` when given
        (the platform passes its validation split), else on `validation`."""
        if valid is not None:
            self.validation = valid
        return super().fit(train, items)

    def _fit(self, train: Interactions, items: pd.DataFrame | None) -> None:
        fitted = [model.fit(train, items) for _, model in self.components]
        self.models_ = fitted
        weights = np.ones(len(fitted))
        self.validation_ndcg_: dict[str, float] = {}
        if self.validation is not None:
            weights = self._search(train, self.validation)
        self.weights_ = weights

    def _search(self, train: Interactions, validation: Interactions) -> np.ndarray:
        users = np.flatnonzero(np.diff(validation.matrix.indptr))
        seen = train.matrix[users]
        excluded = seen.toarray() > 0
        blocks = np.stack(
            [normalise_per_user(m.score(users), seen) for m in self.models_]
        )
        blocks[:, excluded] = 0.0  # ranked out below; keeps 0 x value finite
        positives = validation.matrix[users].toarray()
        n_positives = np.diff(validation.matrix.indptr)[users]

        def objective(weights: np.ndarray) -> float:
            """Mean NDCG@k on validation: `evaluate_full_ranking`, precomputed."""
            blend = np.tensordot(weights, blocks, axes=1)
            blend[excluded] = -np.inf
            hits = hits_at_k(top_k(blend, self.k), positives)
            return float(ndcg(hits, n_positives).mean())

        singles = [objective(np.eye(len(blocks))[c]) for c in range(len(blocks))]
        names = [name for name, _ in self.components]
        self.validation_ndcg_ = dict(zip(names, singles, strict=True))
        weights: np.ndarray = np.eye(len(blocks))[int(np.argmax(singles))]
        best = max(singles)
        for _ in range(self.sweeps):
            for component in range(len(blocks)):
                for value in self.grid:
                    trial = weights.copy()
                    trial[component] = value
                    if trial.sum() == 0 or value == weights[component]:
                        continue
                    found = objective(trial)
                    if found > best + 1e-9:
                        best, weights = found, trial
        self.validation_ndcg_["Hybrid"] = best
        return weights

    def _score_rows(self, rows: sp.csr_matrix, users: np.ndarray | None) -> np.ndarray:
        total = np.zeros(rows.shape, np.float64)
        for weight, model in zip(self.weights_, self.models_, strict=True):
            if weight:
                raw = (
                    model.score(users)
                    if users is not None
                    else model.score_items(rows.indices)
                )
                total += weight * normalise_per_user(raw, rows)
        return total

    def get_params(self) -> dict[str, object]:
        """The blend's settings and each component's parameters, by name."""
        return {
            "components": {name: m.get_params() for name, m in self.components},
            "grid": list(self.grid),
            "sweeps": self.sweeps,
            "k": self.k,
        }


def reference_models(validation: Interactions | None) -> list[tuple[str, Recommender]]:
    """The seven models with their tuned defaults; the hybrid learns on `validation`."""
    singles: list[tuple[str, Recommender]] = [
        ("Popularity", Popularity()),
        ("ItemKNN", ItemKNN()),
        ("ALS", ALS()),
        ("EASE", EASE()),
        ("UserEASE", UserEASE()),
        ("ContentTFIDF", ContentTFIDF()),
    ]
    fresh = [(name, type(m)(**m.get_params())) for name, m in singles]
    return [*singles, ("Hybrid", Hybrid(fresh, validation))]


MODELS: tuple[type[_Base], ...] = (
    Popularity,
    ItemKNN,
    ALS,
    EASE,
    UserEASE,
    ContentTFIDF,
    Hybrid,
)
REQUIREMENTS: dict[str, tuple[str, ...]] = {m.__name__: m.requirements for m in MODELS}
