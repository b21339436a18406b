"""Seven recommenders behind the platform's `Recommender` protocol.

Each keeps its constructor arguments as they are (scikit-learn style), learns in
`fit` into attributes ending in `_`, and names the pip packages it needs in
`requirements`. A user with no train interaction, or an anonymous session with
no seen item, gets the popularity scores (the cold-start path).

Interaction weights are the ratings when the use case declares them. Models
that use them take `rating ** power` (power 0: every interaction counts 1);
the others binarise. Default hyperparameters were chosen on ML-100K by the mean
validation NDCG@10 over four splits that never hold a test rating: RecBole's
valid split (RS 8:1:1 per user, seed 2020) and three re-splits (8:1 per user,
seeds 1-3) of its train + valid ratings (`bench/recommendations_tuning.py`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import ClassVar, Literal, Self

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
    return _weighted(train.matrix, 0.0)


def _weighted(matrix: sp.csr_matrix, power: float) -> sp.csr_matrix:
    """`matrix ** power` on its stored entries, float64; power 0 gives 1s."""
    if power == 0:
        binary: sp.csr_matrix = (matrix > 0).astype(np.float64)
        return binary
    weighted: sp.csr_matrix = sp.csr_matrix(matrix, dtype=np.float64).power(power)
    return weighted


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
        return np.asarray((_weighted(rows, 0.0) @ self.similarity_).toarray())


class EASE(_Base):
    """Embarrassingly shallow autoencoder (Steck 2019), closed form in numpy.

    B = I - P diagMat(1 / diag(P)), P = (X'X + lambda I)^-1, diagonal of B zero;
    scores are X B, with X = rating ** power. Memory: one dense item x item matrix.
    """

    def __init__(self, reg: float = 1000.0, power: float = 0.5) -> None:
        """reg: the L2 weight lambda (RecBole's `reg_weight` defaults to 250);
        power: X = rating ** power (0: binary, as RecBole's EASE)."""
        self.reg = reg
        self.power = power

    def _fit(self, train: Interactions, items: pd.DataFrame | None) -> None:
        matrix = _weighted(train.matrix, self.power)
        gram = (matrix.T @ matrix).toarray()
        gram[np.diag_indices_from(gram)] += self.reg
        inverse = np.linalg.inv(gram)
        weights = inverse / -np.diag(inverse)
        np.fill_diagonal(weights, 0.0)
        self.weights_ = weights

    def _score_rows(self, rows: sp.csr_matrix, users: np.ndarray | None) -> np.ndarray:
        return np.asarray(_weighted(rows, self.power) @ self.weights_)


class UserEASE(_Base):
    """EASE on the transposed matrix: each user is rebuilt from the other users.

    C = I - P diagMat(1 / diag(P)), P = (XX' + lambda I)^-1, diagonal of C zero;
    scores are C'X, with X = rating ** power. It sees user-user structure the
    item models miss, which helps the hybrid. A new session x is regressed on
    the train users without the zero-diagonal constraint: scores x X'P X.
    Memory: users x users, dense.
    """

    def __init__(self, reg: float = 1800.0, power: float = 0.5) -> None:
        """reg: the L2 weight lambda on the user-user gram matrix; power: as EASE."""
        self.reg = reg
        self.power = power

    def _fit(self, train: Interactions, items: pd.DataFrame | None) -> None:
        matrix = _weighted(train.matrix, self.power)
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
            session = _weighted(rows, self.power)
            overlap = (session @ self.matrix_.T).toarray()  # session x train users
            coefficients = overlap @ self.inverse_
        else:
            coefficients = self.weights_[:, users].T
        return np.asarray(self.matrix_.T @ coefficients.T).T


class ALS(_Base):
    """Implicit-feedback matrix factorisation (Hu, Koren, Volinsky 2008).

    `implicit.cpu.als.AlternatingLeastSquares`, seeded, on `threads` threads with
    BLAS kept to one thread (implicit's advice). The confidence of an
    interaction grows with alpha x rating ** power. A new session's factors are
    solved from its items with the item factors fixed.
    """

    requirements = ("numpy", "scipy", "implicit", "threadpoolctl")

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 20.0,
        *,
        alpha: float = 1.0,
        power: float = 0.5,
        iterations: int = 15,
        seed: int = 0,
        threads: int = 1,
    ) -> None:
        """factors: latent size; alpha: confidence scale; power: rating ** power
        (0: binary); threads: 1 or 2."""
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.power = power
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
            confidence = _weighted(train.matrix, self.power).astype(np.float32)
            model.fit(confidence, show_progress=False)
        self.model_ = model

    def _score_rows(self, rows: sp.csr_matrix, users: np.ndarray | None) -> np.ndarray:
        if users is None:
            session = _weighted(rows, self.power).astype(np.float32)
            factors = np.atleast_2d(self.model_.recalculate_user(0, session))
        else:
            factors = self.model_.user_factors[users]
        return np.asarray(factors @ self.model_.item_factors.T)


class ContentTFIDF(_Base):
    """Content-based: TF-IDF of title and genres, cosine to the user's profile.

    The vectors are read from the item frame, one list of terms and one of
    weights per item (the gold content table, built by `content_vectors`), so
    the model and the table cannot disagree. A user's profile is the mean of
    the vectors of the items they have (ratings ignored). Items without a
    vector score 0.
    """

    def __init__(
        self,
        item_column: str = "item_id",
        terms_column: str = "terms",
        *,
        weights_column: str = "weights",
    ) -> None:
        """The item frame's id column and its lists of terms and of weights."""
        self.item_column = item_column
        self.terms_column = terms_column
        self.weights_column = weights_column

    def _fit(self, train: Interactions, items: pd.DataFrame | None) -> None:
        columns = [self.item_column, self.terms_column, self.weights_column]
        missing = [c for c in columns if items is None or c not in items.columns]
        if items is None or missing:
            raise SchemaError(
                f"ContentTFIDF: the item frame has no column {missing}, "
                f"expected {columns} (the gold content table)"
            )
        self.vectors_ = vectors_from_lists(
            items.drop_duplicates(self.item_column).set_index(self.item_column),
            pd.Index(train.items),
            terms=self.terms_column,
            weights=self.weights_column,
        )

    def _score_rows(self, rows: sp.csr_matrix, users: np.ndarray | None) -> np.ndarray:
        profiles = np.asarray((_weighted(rows, 0.0) @ self.vectors_).toarray())
        norms = np.linalg.norm(profiles, axis=1, keepdims=True)
        profiles /= np.where(norms > 0, norms, 1.0)
        return np.asarray((self.vectors_ @ profiles.T).T)


def content_vectors(
    frame: pd.DataFrame,
    text_columns: Sequence[str],
    genre_column: str | None,
    *,
    min_df: int = 1,
) -> tuple[sp.csr_matrix, np.ndarray]:
    """L2-normalised TF-IDF rows of `frame` (one per item, in its order), terms.

    The text is the `text_columns` joined; each genre becomes one token
    (`genre_scifi`), so a genre never matches a title word. Missing values
    read as empty text.
    """
    text = pd.Series("", index=frame.index)
    for column in text_columns:
        text = text + " " + frame[column].fillna("").astype(str)
    if genre_column:
        genres = frame[genre_column].fillna("").astype(str)
        tokens = genres.str.replace(r"[^\w\s|]", "", regex=True).str.lower()
        text = text + " " + tokens.str.replace(r"([^\s|]+)", r"genre_\1", regex=True)
    vectorizer = TfidfVectorizer(min_df=min_df)
    vectors = sp.csr_matrix(vectorizer.fit_transform(text.to_numpy()))
    return vectors, vectorizer.get_feature_names_out()


def vectors_from_lists(
    frame: pd.DataFrame, catalogue: pd.Index, *, terms: str, weights: str
) -> sp.csr_matrix:
    """Rows in `catalogue` order from per-item lists of terms and weights.

    Columns are the distinct terms sorted, TfidfVectorizer's vocabulary order,
    so rows equal `content_vectors`' entry for entry. An item absent from
    `frame`, or with a missing list, gets an empty row.
    """
    frame = frame.reindex(catalogue)
    term_lists = [_listed(t) for t in frame[terms]]
    weight_lists = [_listed(w) for w in frame[weights]]
    sizes = [len(t) for t in term_lists]
    if sizes != [len(w) for w in weight_lists]:
        raise SchemaError(f"content: the {terms} and {weights} lists differ in length")
    every = [str(t) for row in term_lists for t in row]
    vocabulary = np.unique(np.asarray(every, dtype=object).astype(str))
    return sp.csr_matrix(
        (
            np.asarray([w for row in weight_lists for w in row], np.float64),
            np.searchsorted(vocabulary, np.asarray(every, dtype=str)).astype(np.int64),
            np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        ),
        shape=(len(catalogue), len(vocabulary)),
    )


def _listed(value: object) -> list[object]:
    """A list cell as a list; a missing one (None, NaN after a reindex) as []."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    listed: list[object] = list(value)  # type: ignore[call-overload]
    return listed


def normalise_per_user(
    scores: np.ndarray,
    seen: sp.csr_matrix,
    *,
    how: Literal["zscore", "minmax"] = "zscore",
) -> np.ndarray:
    """Put each row on a common scale over the items the user has not seen.

    zscore: (score - mean) / standard deviation; minmax: onto [0, 1]. Seen
    items are ranked out anyway; leaving them in would let one huge score
    (EASE on a train item) squash the rest. A constant row becomes 0.
    """
    candidates = np.array(scores, dtype=np.float64)
    coo = seen.tocoo()
    candidates[coo.row, coo.col] = np.nan
    if how == "zscore":
        low = np.nanmean(candidates, axis=1, keepdims=True)
        span = np.nanstd(candidates, axis=1, keepdims=True)
    else:
        low = np.nanmin(candidates, axis=1, keepdims=True)
        span = np.nanmax(candidates, axis=1, keepdims=True) - low
    span[~(span > 0)] = np.inf
    return np.asarray((scores - low) / span)


def _candidate_objective(
    blocks: np.ndarray,
    penalty: np.ndarray,
    positives: np.ndarray,
    n_positives: np.ndarray,
    k: int,
    *,
    depth: int = 50,
) -> Callable[[np.ndarray], float]:
    """Mean NDCG@k of a blend, ranked only among each component's top `depth`.

    With non-negative weights an item outside every component's top `depth`
    all but never reaches a blend's top k; ranking a few hundred candidates
    instead of the catalogue makes the weight search several times faster.
    Columns stay in item order, so ties break as in `top_k`.
    """
    tops = [top_k(block + penalty, min(depth, block.shape[1])) for block in blocks]
    union = np.sort(np.concatenate(tops, axis=1), axis=1)
    repeated = np.zeros_like(union, dtype=bool)
    repeated[:, 1:] = union[:, 1:] == union[:, :-1]
    gathered = np.stack([np.take_along_axis(b, union, axis=1) for b in blocks])
    cut = np.where(repeated, -np.inf, 0.0).astype(np.float32)
    cut += np.take_along_axis(penalty, union, axis=1)
    hits = np.take_along_axis(positives, union, axis=1) > 0

    def objective(weights: np.ndarray) -> float:
        blend = np.tensordot(weights.astype(np.float32), gathered, axes=1) + cut
        top = top_k(blend, k)
        return float(ndcg(np.take_along_axis(hits, top, axis=1), n_positives).mean())

    return objective


class Hybrid(_Base):
    """A weighted blend of other models' scores, each put on a per-user scale.

    The weights maximise NDCG@k on `validation` (never the test split) by
    coordinate ascent over `grid`, starting from the best single model with
    weight 1, for at most `sweeps` passes (it stops at a pass that gains
    nothing), so on validation the blend is never below its best component.
    Without validation every component weighs 1. `normalise` is how each
    user's scores are scaled before blending (`normalise_per_user`): z-scores
    held out better than min-max on validation (`bench/recommendations_tuning.py`).
    """

    requirements = ("numpy", "scipy", "implicit", "threadpoolctl")

    def __init__(
        self,
        components: Sequence[tuple[str, Recommender]],
        validation: Interactions | None = None,
        *,
        grid: Sequence[float] = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.4, 2.0),
        sweeps: int = 6,
        k: int = 10,
        normalise: Literal["zscore", "minmax"] = "zscore",
    ) -> None:
        """components: (name, unfitted model) pairs; validation: held-out positives."""
        self.components = components
        self.validation = validation
        self.grid = grid
        self.sweeps = sweeps
        self.k = k
        self.normalise = normalise

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
            [
                normalise_per_user(m.score(users), seen, how=self.normalise)
                for m in self.models_
            ]
        ).astype(np.float32)  # float32: the search's time is in this product
        blocks[:, excluded] = 0.0  # ranked out below; keeps 0 x value finite
        penalty = np.where(excluded, -np.inf, 0.0).astype(np.float32)
        positives = validation.matrix[users].toarray()
        n_positives = np.diff(validation.matrix.indptr)[users]

        def objective(weights: np.ndarray) -> float:
            """Mean NDCG@k on validation: `evaluate_full_ranking`, precomputed."""
            blend = np.tensordot(weights.astype(np.float32), blocks, axes=1)
            blend += penalty
            hits = hits_at_k(top_k(blend, self.k), positives)
            return float(ndcg(hits, n_positives).mean())

        fast = _candidate_objective(blocks, penalty, positives, n_positives, self.k)
        singles = [objective(np.eye(len(blocks))[c]) for c in range(len(blocks))]
        names = [name for name, _ in self.components]
        self.validation_ndcg_ = dict(zip(names, singles, strict=True))
        single: np.ndarray = np.eye(len(blocks))[int(np.argmax(singles))]
        weights, best = single, fast(single)
        for _ in range(self.sweeps):
            start = best
            for component in range(len(blocks)):
                for value in self.grid:
                    trial = weights.copy()
                    trial[component] = value
                    if trial.sum() == 0 or value == weights[component]:
                        continue
                    found = fast(trial)
                    if found > best + 1e-9:
                        best, weights = found, trial
            if best == start:
                break
        found = objective(weights)  # exact, over the whole catalogue
        if found < max(singles):
            weights, found = single, max(singles)
        self.validation_ndcg_["Hybrid"] = found
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
                total += weight * normalise_per_user(raw, rows, how=self.normalise)
        return total

    def get_params(self) -> dict[str, object]:
        """The blend's settings and each component's parameters, by name."""
        return {
            "components": {name: m.get_params() for name, m in self.components},
            "grid": list(self.grid),
            "sweeps": self.sweeps,
            "k": self.k,
            "normalise": self.normalise,
        }


def reference_models(
    validation: Interactions | None, *, seed: int = 0
) -> list[tuple[str, Recommender]]:
    """The seven models with their tuned defaults; the hybrid learns on `validation`.

    `seed` seeds ALS, as the use case's trainers do with the run's seed.
    """
    singles: list[tuple[str, Recommender]] = [
        ("Popularity", Popularity()),
        ("ItemKNN", ItemKNN()),
        ("ALS", ALS(seed=seed)),
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
