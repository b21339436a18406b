"""Benchmark: seven recommenders on MovieLens-100K under RecBole 1.2.1's protocol.

Protocol (RecBole's defaults, `recbole/properties/overall.yaml` and
`dataset/ml-100k.yaml`): every rating is a positive (ml-100k sets no `threshold`
and no `val_interval`), interactions split per user 8:1:1 in random order (RS,
RO, group_by user; our shuffle is numpy's, seeded, so the rows differ from
RecBole's torch shuffle but the per-user counts are the same), full ranking over
every item the user has in neither train nor valid, metrics@10 averaged over
users with a test positive. Hyperparameters and the hybrid's weights come from
the valid split only; the table shows test figures (and valid NDCG@10).

Figures at seed 2020 (test NDCG@10 / valid NDCG@10; `--quality-only`): Hybrid
(per-user z-scores) 0.3379 / 0.2712 (with min-max: 0.3376 / 0.2715),
UserEASE (sqrt(rating), lambda 1800) 0.3339 / 0.2651, EASE
(sqrt(rating), lambda 1000) 0.3336 / 0.2638, ALS (64 factors, reg 20,
sqrt(rating) confidence) 0.3324 / 0.2645, ItemKNN 0.2802 / 0.2393. Before
the ratings were used as weights (binary models, hand-set on valid): Hybrid
0.331, EASE 0.324. The defaults come from `bench/recommendations_tuning.py`
(mean valid NDCG@10 over RecBole's valid split and three re-splits of train +
valid: no test rating is read). Valid tops out near 0.27 for every single
model and the blend; at that level a valid gain of 0.0003 does not carry to
test (a blend at valid 0.2712 read 0.3398 on test, the one learned here at
0.2715 reads 0.3376). The 0.34 target is not reached.
The z-scores were chosen on validation alone: learned on half the valid users
and judged on the other half, in each of the four tuning splits
(`bench/recommendations_tuning.py --blend-only`: 0.2729 against 0.2720 for
min-max, higher in all four).

Why test reads higher than valid: when ranking for valid, the user's test items
are still candidates and count as misses; when ranking for test, the valid
items are excluded. RecBole's own runs show the same gap.

Published figures to compare with. RecBole's repository publishes tuned
benchmarks for ml-1m, amazon-books and yelp (asset/hyper_tune_configs/general/
ml-1m_general.md: ml-1m with ratings >= 3 and a 10-core filter), not for ml-100k.
For ml-100k: Schmidt, Prinz, Nitschke, "Evaluating the performance-deviation of
itemKNN in RecBole and LensKit" (arXiv:2407.13531, 2024) report RecBole's ItemKNN
on ML-100K, implicit feedback, at nDCG 0.2674 (LensKit 0.2540 with RecBole's
nDCG). Our ItemKNN on the same kind of split is in that range.

Peer cross-check: the ALS model is evaluated a second time, on the same split,
through `implicit.evaluation.ranking_metrics_at_k` (train + valid items filtered,
as ours). Its definitions: ndcg is RecBole's (IDCG over min(|R(u)|, K) hits,
mean over users with a test item) so the two NDCG@10 should agree up to
ties; its "precision" is micro-averaged and divides by min(K, |R(u)|), not K
(so it reads higher than RecBole's Precision@K); map divides by min(K, |R(u)|);
auc is a limited AUC over the top K.

Serving: the platform itself (`aistack run recommendations`, then `aistack
serve recommendations`, 1 worker) answers GET /v1/recommendations/users/{id}/
items?k=10 for users 1..1100 (the ids above 943 take the cold-start path);
`wrk` (keep-alive) as fast as answered, then paced at 500 requests/s on an
absolute schedule (its latency counts from each request's send).

    .venv/bin/python bench/recommendations.py [--source DIR] [--seed 2020]
    .venv/bin/python bench/recommendations.py --serving-only
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import scipy.sparse as sp
from implicit.evaluation import ranking_metrics_at_k
from rich.console import Console
from rich.table import Table

from aistack.training.ranking import Interactions, evaluate_full_ranking
from aistack.usecases.recommendations.data import load_movielens, recbole_splits
from aistack.usecases.recommendations.gold import content_frame
from aistack.usecases.recommendations.models import ALS, reference_models

K = 10
TARGET_NDCG = 0.34
TARGET_TRAIN_SECONDS = 10.0
COLUMNS = ["ndcg", "recall", "hit", "mrr", "precision", "itemcoverage", "novelty"]


def verdict(ok: bool) -> str:
    """A coloured PASS / FAIL."""
    return "[green]PASS[/green]" if ok else "[red]FAIL[/red]"


def cross_check(
    console: Console,
    als: ALS,
    ours: dict[str, float],
    splits: tuple[Interactions, Interactions, Interactions],
) -> None:
    """ALS on test through implicit.evaluation, next to our figures."""
    train, valid, test = splits
    seen = sp.csr_matrix(train.matrix + valid.matrix)
    peer = ranking_metrics_at_k(als.model_, seen, test.matrix, K, show_progress=False)
    cross = Table(title=f"ALS, test split: ours vs implicit.evaluation @{K}")
    for column in ("metric", "ours (RecBole)", "implicit", "note"):
        cross.add_column(column)
    cross.add_row(
        "ndcg",
        f"{ours[f'ndcg@{K}']:.4f}",
        f"{peer['ndcg']:.4f}",
        "same definition; differences come from ties only",
    )
    cross.add_row(
        "precision",
        f"{ours[f'precision@{K}']:.4f}",
        f"{peer['precision']:.4f}",
        "implicit: all hits / sum of min(K, |R(u)|)",
    )
    cross.add_row("map", "-", f"{peer['map']:.4f}", "AP / min(K, |R(u)|)")
    cross.add_row("auc", "-", f"{peer['auc']:.4f}", "limited to the top K")
    console.print(cross)
    gap = abs(ours[f"ndcg@{K}"] - peer["ndcg"])
    console.print(f"NDCG@{K} ours vs implicit: |difference| = {gap:.2e}")
    np.testing.assert_allclose(ours[f"ndcg@{K}"], peer["ndcg"], atol=5e-3)


TARGET_P99_MS = 20.0
TARGET_RATE = 500
LUA = Path(__file__).parent / "_serving_lua" / "get_users.lua"
_WRK_JSON = re.compile(r"^WRK_JSON (\{.*\})\s*$", re.MULTILINE)


def _wrk(url_prefix: str, *, seconds: int, connections: int, rate: int) -> dict:
    env = {
        **os.environ,
        "BENCH_PREFIX": url_prefix,
        "BENCH_RATE": f"{rate / 2:g}" if rate else "0",  # per wrk thread
    }
    done = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", str(LUA), url_prefix],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    found = _WRK_JSON.search(done.stdout)
    if found is None:
        raise RuntimeError(f"wrk printed no figures: {done.stdout} {done.stderr}")
    return json.loads(found.group(1))


def serving(console: Console) -> bool:
    """Train and serve through the platform; top-K latency and throughput."""
    cli = [sys.executable, "-m", "aistack"]
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp) / "ws"
        subprocess.run(
            [*cli, "run", "recommendations", "-q", "-w", str(ws)], check=True
        )
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen(
            [*cli, "serve", "recommendations", "--port", str(port), "-w", str(ws)],
            stdout=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                try:
                    if httpx.get(f"{base}/ready", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            prefix = f"{base}/v1/recommendations/users/"
            runs = {
                "as fast as answered (8 connections)": _wrk(
                    prefix, seconds=10, connections=8, rate=0
                ),
                f"paced at {TARGET_RATE} requests/s (8 connections)": _wrk(
                    prefix, seconds=20, connections=8, rate=TARGET_RATE
                ),
            }
        finally:
            server.terminate()
            server.wait(timeout=30)
    table = Table(title="Serving top-10 (aistack serve recommendations, 1 worker, wrk)")
    for column in ("load", "requests/s", "p50 ms", "p99 ms", "max ms", "errors"):
        table.add_column(column, justify="left" if column == "load" else "right")
    for name, r in runs.items():
        rps = r["requests"] / (r["duration_us"] / 1e6)
        table.add_row(
            name,
            f"{rps:,.0f}",
            f"{r['p50_us'] / 1000:.2f}",
            f"{r['p99_us'] / 1000:.2f}",
            f"{r['max_us'] / 1000:.2f}",
            str(r["non2xx"] + r["errors"]),
        )
    console.print(table)
    paced = runs[f"paced at {TARGET_RATE} requests/s (8 connections)"]
    rate = paced["requests"] / (paced["duration_us"] / 1e6)
    p99 = paced["p99_us"] / 1000
    ok = p99 < TARGET_P99_MS and rate >= 0.95 * TARGET_RATE
    console.print(
        f"target: p99 < {TARGET_P99_MS:g} ms at {TARGET_RATE} requests/s: "
        f"p99 {p99:.2f} ms at {rate:,.0f}/s {verdict(ok)}"
    )
    return ok


def main() -> None:
    """Fit every model on train, evaluate on valid and test, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--serving-only", action="store_true")
    parser.add_argument(
        "--quality-only", action="store_true", help="quick mode: models, no serving"
    )
    args = parser.parse_args()
    console = Console(width=150)
    if args.serving_only:
        serving(console)
        return

    movielens = load_movielens(args.source)
    train, valid, test = recbole_splits(movielens, seed=args.seed)
    console.print(
        f"MovieLens: {len(movielens.ratings):,} ratings, {train.n_users} users, "
        f"{train.n_items} items; train/valid/test {train.matrix.nnz:,} / "
        f"{valid.matrix.nnz:,} / {test.matrix.nnz:,} (RS 8:1:1, seed {args.seed})"
    )

    table = Table(title=f"Test split, full ranking, @{K} (RecBole definitions)")
    table.add_column("model")
    for name in ("NDCG", "Recall", "Hit", "MRR", "Precision", "Coverage"):
        table.add_column(name, justify="right")
    table.add_column("novelty (bits)", justify="right")
    table.add_column("train s", justify="right")
    table.add_column("valid NDCG", justify="right")
    items = content_frame(movielens.items)  # the gold content table
    results: dict[str, dict[str, float]] = {}
    fitted = {}
    for name, model in reference_models(valid, seed=args.seed):
        start = time.perf_counter()
        model.fit(train, items)
        seconds = time.perf_counter() - start
        got = evaluate_full_ranking(model, train, test, K, exclude=(valid,))
        got["seconds"] = seconds
        got["valid"] = evaluate_full_ranking(model, train, valid, K)[f"ndcg@{K}"]
        results[name], fitted[name] = got, model
        figures = [f"{got[f'{c}@{K}']:.4f}" for c in COLUMNS]
        table.add_row(name, *figures, f"{seconds:.2f}", f"{got['valid']:.4f}")
    console.print(table)

    best = max(results, key=lambda n: results[n][f"ndcg@{K}"])
    slowest = max(results, key=lambda n: results[n]["seconds"])
    targets = Table(title="Targets")
    for column in ("target", "figure", "verdict"):
        targets.add_column(column)
    best_ndcg = results[best][f"ndcg@{K}"]
    targets.add_row(
        f"best NDCG@{K} >= {TARGET_NDCG}",
        f"{best_ndcg:.4f} ({best})",
        verdict(best_ndcg >= TARGET_NDCG),
    )
    longest = results[slowest]["seconds"]
    targets.add_row(
        f"every model trains <= {TARGET_TRAIN_SECONDS:.0f} s",
        f"{longest:.2f} s ({slowest})",
        verdict(longest <= TARGET_TRAIN_SECONDS),
    )
    console.print(targets)

    als = fitted["ALS"]
    assert isinstance(als, ALS)
    cross_check(console, als, results["ALS"], (train, valid, test))
    if not args.quality_only:
        serving(console)


if __name__ == "__main__":
    main()
