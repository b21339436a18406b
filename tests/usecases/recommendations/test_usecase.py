"""The recommendations use case end to end on MovieLens-100K: medallion, six
models trained and gated on RecBole's protocol, champion, batch top-K, and the
served top-K over HTTP (exactly the batch ranking, rated items left out)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import httpx
import mlflow
import numpy as np
import orjson
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from aistack.api.auth import API_PRINCIPAL
from aistack.api.ranking import RECOMMENDATION_LOG_SCHEMA, create_ranking_app
from aistack.contract import get_any_use_case
from aistack.features.derived import TRANSFORM_KEY
from aistack.governance.audit import audit_path, verify
from aistack.governance.audit import read as read_audit
from aistack.governance.principals import Policy, Principal, hash_token, new_token
from aistack.monitoring.alerts import firing
from aistack.monitoring.ranking import ranking_ab_test
from aistack.monitoring.recommendations import _popularity, monitor_recommendations
from aistack.monitoring.trace import trace
from aistack.registry.rollout import (
    end_rollout,
    read_rollout,
    routes_to_challenger,
    start_rollout,
)
from aistack.runner import run
from aistack.training.ranking import top_k
from aistack.training.recommend import load_ranking_data
from aistack.training.tracking import LINEAGE_TAG, tracking
from aistack.usecases.recommendations.data import ml100k_folder
from aistack.usecases.recommendations.models import EASE, ContentTFIDF, content_vectors
from conftest import make_workspace
from governance.test_access import metrics_need_predict
from servers import aistack_server


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    uc = get_any_use_case("recommendations")
    ws = make_workspace(tmp_path_factory.mktemp("rec") / "ws")
    report = run(uc, ws, uc.params())
    return uc, ws, report


def test_every_rating_is_accounted_for_and_models_are_gated(trained) -> None:
    _, ws, report = trained
    silver = {s.table: s for s in report.silver}
    assert ws.lake.rows("silver.ratings") == 100_000
    assert ws.lake.rows("silver.movies") == 1682 and ws.lake.rows("silver.users") == 943
    assert all(s.quarantined_rows == 0 for s in silver.values())
    verdicts = {c.trainer: c.passed for c in report.candidates}
    assert verdicts["content_tfidf"] is False  # below the NDCG@10 floor
    assert verdicts["ease"] and verdicts["als"] and verdicts["item_knn"]
    champion = report.champion
    assert champion is not None and champion.metrics["ndcg_at_10"] > 0.3
    best = max(
        (c for c in report.candidates if c.passed),
        key=lambda c: c.metrics["ndcg_at_10"],
    )
    assert champion.trainer == best.trainer


def raw_ratings() -> list[tuple[int, int, float, int]]:
    """(user, item, rating, unix time) straight from the recbole file."""
    lines = (ml100k_folder() / "ml-100k.inter").read_text().splitlines()[1:]
    return [
        (int(u), int(i), float(r), int(float(t)))
        for u, i, r, t in (line.split("\t") for line in lines)
    ]


def test_gold_tables_hold_history_popularity_and_content(trained) -> None:
    uc, ws, report = trained
    names = {g.name: uc.gold_table_name(g) for g in uc.gold}
    assert [g.table for g in report.gold] == list(names.values())
    assert ws.lake.rows(names["user_history"]) == 943
    assert ws.lake.rows(names["item_popularity"]) == 1682
    assert ws.lake.rows(names["item_content"]) == 1682
    ratings = ws.lake.version("silver.ratings")
    inputs = ws.lake.last_inputs(names["user_history"])
    assert inputs is not None and inputs.pop(TRANSFORM_KEY)
    assert inputs == {"silver.ratings": ratings}
    # by hand from the raw file: user 1's ratings in time order, Star Wars' windows
    raw = raw_ratings()
    history = ws.lake.read(names["user_history"]).to_pandas().set_index("user_id")
    mine = sorted((t, i) for u, i, _, t in raw if u == 1)
    assert history.loc[1, "n_ratings"] == len(mine) == 272
    assert list(history.loc[1, "item_id"]) == [i for _, i in mine]
    as_of = max(t for *_, t in raw)
    star_wars = [t for _, i, _, t in raw if i == 50]
    popularity = ws.lake.read(names["item_popularity"]).to_pandas()
    row = popularity.set_index("item_id").loc[50]
    assert row["ratings_all"] == len(star_wars) == 583
    for days in (7, 30, 90):
        inside = sum(t > as_of - days * 86400 for t in star_wars)
        assert row[f"ratings_{days}d"] == inside, days
    assert popularity["ratings_90d"].sum() > popularity["ratings_30d"].sum() > 0
    content = ws.lake.read(names["item_content"]).to_pandas().set_index("item_id")
    toy_story = dict(
        zip(content.loc[1, "terms"], content.loc[1, "weights"], strict=True)
    )
    assert {"toy", "story", "genre_animation", "genre_comedy"} <= set(toy_story)
    assert sum(w * w for w in toy_story.values()) == pytest.approx(1.0)


def test_training_reads_gold_and_ranks_exactly_as_from_silver(trained) -> None:
    """Interactions from the gold history and content vectors from the gold
    content table (real Delta tables, read back through DuckDB) give the same
    split, matrices and item vectors as silver did, hence the same rankings;
    the monitor's popularity from gold equals silver's counts; every run's
    lineage names the gold tables at their versions."""
    uc, ws, report = trained
    seed = ws.settings.seed
    gold = load_ranking_data(ws.lake, uc, seed=seed)
    before = replace(uc, history=None, item_features=None, popularity=None)
    silver = load_ranking_data(ws.lake, before, seed=seed)
    tables = ["gold.recommendations_user_history", "gold.recommendations_item_content"]
    assert gold.lineage == {t: ws.lake.version(t) for t in tables}
    assert silver.lineage == ws.lake.versions(["silver.ratings", "silver.movies"])
    assert gold.split == silver.split
    for part in ("train", "valid", "test", "every"):
        got, expected = getattr(gold, part), getattr(silver, part)
        assert np.array_equal(got.users, expected.users), part
        assert np.array_equal(got.items, expected.items), part
        assert (got.matrix != expected.matrix).nnz == 0, part
        assert got.matrix.dtype == expected.matrix.dtype, part
    # the content model from gold holds the vectors it used to build from silver
    content = ContentTFIDF().fit(gold.train, gold.items)
    assert silver.items is not None
    text = silver.items.set_index("item_id").reindex(gold.train.items)
    vectors, _ = content_vectors(text, ("title",), "genres")
    assert (content.vectors_ != vectors).nnz == 0
    users = np.arange(gold.train.n_users)
    for kind in (ContentTFIDF, EASE):
        from_gold = kind().fit(gold.train, gold.items).score(users)
        from_silver = kind().fit(silver.train, gold.items).score(users)
        assert np.array_equal(top_k(from_gold, 10), top_k(from_silver, 10))
    # the monitor's item popularity from gold is silver's count, item for item
    from_gold, from_silver = _popularity(ws, uc), _popularity(ws, before)
    assert from_gold.sort_index().equals(from_silver.sort_index())
    with tracking(ws.settings.mlflow_uri):
        for candidate in report.candidates:
            tags = mlflow.get_run(candidate.run_id).data.tags
            for table in tables:
                assert tags[f"{LINEAGE_TAG}.{table}"] == str(ws.lake.version(table))
            assert not any(t.startswith(f"{LINEAGE_TAG}.silver") for t in tags)


def test_a_rerun_on_the_same_inputs_trains_nothing(trained) -> None:
    uc, ws, report = trained
    again = run(uc, ws, uc.params())
    assert all(c.reused for c in again.candidates)
    assert [c.version for c in again.candidates] == [
        c.version for c in report.candidates
    ]
    assert again.scoring is not None and again.scoring.skipped
    assert len(again.gold) == 3 and all(g.skipped for g in again.gold)
    assert [g.version for g in again.gold] == [g.version for g in report.gold]


def test_batch_top_k_leaves_out_rated_items(trained) -> None:
    uc, ws, _ = trained
    con = ws.lake.connect(ws.lake.versions([uc.recommendations_table, uc.interactions]))
    per_user = con.execute(
        f"SELECT count(*) AS n, count(DISTINCT user_id) AS users "
        f"FROM {uc.recommendations_table}"
    ).fetchone()
    assert per_user == (943 * 10, 943)
    overlap = con.execute(
        f"SELECT count(*) FROM {uc.recommendations_table} r "
        f"JOIN {uc.interactions} s USING (user_id, item_id)"
    ).fetchone()
    assert overlap == (0,)


def test_served_top_k_is_the_batch_ranking_and_unknown_users_are_cold(
    trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uc, ws, _ = trained
    key = os.urandom(32)
    monkeypatch.setenv("AISTACK_AUDIT_KEY", key.hex())  # the server signs
    con = ws.lake.connect(ws.lake.versions([uc.recommendations_table]))
    expected = [
        r[0]
        for r in con.sql(
            f"SELECT item_id FROM {uc.recommendations_table} "
            "WHERE user_id = 7 ORDER BY rank"
        ).fetchall()
    ]
    with aistack_server(ws.settings.workspace, use_case=uc.name) as (base, _):
        answer = httpx.get(f"{base}/v1/recommendations/users/7/items", params={"k": 10})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["cold_start"] is False
        assert [i["item_id"] for i in body["items"]] == expected
        scores = [i["score"] for i in body["items"]]
        assert scores == sorted(scores, reverse=True)
        cold = httpx.get(f"{base}/v1/recommendations/users/100000/items?k=5").json()
        assert cold["cold_start"] is True and len(cold["items"]) == 5
        session = httpx.post(
            f"{base}/v1/recommendations/session/items",
            json={"items": [50, 181, 999_999], "k": 5},
        ).json()
        got = [i["item_id"] for i in session["items"]]
        assert len(got) == 5 and not {50, 181} & set(got)
        assert session["unknown_items"] == [999_999]
        for bad in ("k=0", "k=101", "k=x"):
            refused = httpx.get(f"{base}/v1/recommendations/users/7/items?{bad}")
            assert refused.status_code == 422
            assert refused.json()["detail"][0]["loc"] == ["query", "k"]
        huge = httpx.get(f"{base}/v1/recommendations/users/{2**64}/items")
        assert huge.status_code == 422
        metrics = httpx.get(f"{base}/metrics").text
        assert "aistack_cold_start_requests_total 1.0" in metrics
    with tracking(ws.settings.mlflow_uri):
        assert ws.registry.version_of(uc.name, "champion") == body["model_version"]
    # every answer audited once (flushed at shutdown): who, model version, id
    answers = {a["request_id"]: a for a in (body, cold, session)}
    audited = [
        r
        for r in read_audit(audit_path(ws.settings))
        if r["action"] == "predict" and r["details"]["request_id"] in answers
    ]
    assert sorted(r["details"]["route"] for r in audited) == ["session", "user", "user"]
    for r in audited:
        assert r["principal"] == API_PRINCIPAL
        assert r["details"]["use_case"] == uc.name
        assert r["details"]["model_version"] == body["model_version"]
        assert "user_id" not in r["details"] and "items" not in r["details"]
    found = verify(audit_path(ws.settings), key=key)
    assert found.broken is None and found.seals >= 1, found
    # a served ranking traces: its log row, model version, run, inputs, who
    traced = trace(ws, body["request_id"])
    assert (traced.use_case, traced.model_version) == (uc.name, body["model_version"])
    assert traced.score is None and traced.requested_by == API_PRINCIPAL
    assert traced.run_id is not None and traced.inputs


def test_with_a_policy_answers_and_metrics_need_predict(trained, tmp_path) -> None:
    uc, ws, _ = trained
    policy = Policy(tmp_path / "policy.toml")
    tokens = {name: new_token() for name in ("root", "svc", "aud")}
    for name, role in (("root", "admin"), ("svc", "service"), ("aud", "auditor")):
        policy.principals[name] = Principal(name, (role,), (), hash_token(tokens[name]))
    policy.save()
    env = {"AISTACK_POLICY": str(policy.path), "AISTACK_TOKEN": tokens["svc"]}
    with aistack_server(ws.settings.workspace, use_case=uc.name, env=env) as (base, _):
        url = f"{base}/v1/recommendations/users/7/items"
        assert httpx.get(url).status_code == 401
        bearer = {"Authorization": f"Bearer {tokens['svc']}"}
        answer = httpx.get(url, headers=bearer)
        assert answer.status_code == 200, answer.text
        metrics_need_predict(base, tokens, uc.name)
    audited = [
        r
        for r in read_audit(audit_path(ws.settings))
        if r["details"].get("request_id") == answer.json()["request_id"]
    ]
    assert [r["principal"] for r in audited] == ["svc"]


MONITOR = (sys.executable, "-m", "aistack", "monitor")


@pytest.mark.slow  # two servers: about 70 s on a loaded 2-core machine
def test_served_recommendations_are_logged_and_monitored(trained, tmp_path) -> None:
    uc, ws, _ = trained
    users = list(range(1, 201))
    con = ws.lake.connect(ws.lake.versions([uc.recommendations_table]))
    expected = {  # served top-K is the batch ranking (test above)
        r[0]
        for r in con.sql(
            f"SELECT item_id FROM {uc.recommendations_table} "
            f"WHERE user_id <= 200 AND rank <= 10"
        ).fetchall()
    }
    start = datetime.now(UTC)
    with aistack_server(ws.settings.workspace, use_case=uc.name) as (base, _):
        for user in users:
            answer = httpx.get(f"{base}/v1/recommendations/users/{user}/items")
            assert answer.status_code == 200
    known = monitor_recommendations(
        ws, uc, report_path=tmp_path / "known.html", since=start
    )
    assert int(known.daily["answers"].sum()) == len(users)
    assert known.catalogue == 1682
    shown = set(
        item
        for items in ws.lake.read(uc.log_table).to_pandas()["items"]
        for item in orjson.loads(items)
    )
    assert expected <= shown
    assert known.daily["items_shown"].max() == len(expected)
    assert known.daily["coverage"].max() == pytest.approx(len(expected) / 1682)
    assert not known.drifted_days  # a sample of users: the batch's popularity
    cold_start = datetime.now(UTC)
    with aistack_server(ws.settings.workspace, use_case=uc.name) as (base, _):
        for user in range(100_000, 100_100):  # unknown users: popularity path
            httpx.get(f"{base}/v1/recommendations/users/{user}/items")
    cold = monitor_recommendations(
        ws, uc, report_path=tmp_path / "cold.html", since=cold_start
    )
    assert cold.daily["cold_start_share"].min() == 1.0
    assert cold.daily["items_shown"].max() == 10  # the same top-10 for everyone
    assert cold.drifted_days  # towards the blockbusters
    assert cold.daily["mean_popularity"].min() > cold.reference_mean_popularity
    assert "popularity PSI" in (tmp_path / "cold.html").read_text()
    report = tmp_path / "cli.html"
    args = ["--hours", "1", "-w", str(ws.settings.workspace), "--report", str(report)]
    cli = subprocess.run(
        [*MONITOR, uc.name, *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "popularity_psi" in cli.stdout and report.is_file()
    assert "window: popularity_psi" in " ".join(cli.stdout.split())


def start_canary(ws, uc, version: int) -> None:
    """A 50 % canary of model `version` of the use case."""
    with tracking(ws.settings.mlflow_uri):
        start_rollout(
            ws.registry, uc.name, mode="canary", share=50.0, version=version, actor="t"
        )


def test_canary_routes_sticky_users_and_the_ab_test_finds_the_better_arm(
    trained,
) -> None:
    uc, ws, report = trained
    popularity = next(c for c in report.candidates if c.trainer == "popularity")
    start_canary(ws, uc, popularity.version)
    try:
        result = ranking_ab_test(ws, uc, seed=1)
        # the champion (best NDCG@10) gets more clicks than popularity, clearly
        assert result.n_a > 1000 and result.n_b > 1000
        assert result.value_a > result.value_b
        assert result.significant and result.difference < 0
        with tracking(ws.settings.mlflow_uri):
            rollout = read_rollout(ws.registry, uc.name)
        assert rollout is not None
        with aistack_server(ws.settings.workspace, use_case=uc.name) as (base, _):
            arms = {}
            for user in range(1, 41):
                body = httpx.get(f"{base}/v1/recommendations/users/{user}/items").json()
                arms[user] = (body["arm"], body["model_version"])
                again = httpx.get(f"{base}/v1/recommendations/users/{user}/items")
                assert (again.json()["arm"], again.json()["model_version"]) == arms[
                    user
                ]
            for user, (arm, version) in arms.items():
                to_challenger = routes_to_challenger(rollout, user)
                assert arm == ("challenger" if to_challenger else "champion")
                assert (version == popularity.version) == to_challenger
            assert {a for a, _ in arms.values()} == {"champion", "challenger"}
    finally:
        with tracking(ws.settings.mlflow_uri):
            end_rollout(
                ws.registry, uc.name, status="stopped", reason="test", actor="t"
            )


def log_answers(ws, uc, answers: list[tuple[int, list[int], bool]]) -> datetime:
    """Append answers to the recommendation log as the server writes them."""
    start = datetime.now(UTC)
    rows = [
        {
            "request_id": uuid.uuid4().hex,
            "logged_at": datetime.now(UTC),
            "route": "user",
            "user_id": user,
            "items": orjson.dumps(items).decode(),
            "cold_start": cold,
            "model_name": uc.name,
            "model_version": 1,
            "arm": "champion",
        }
        for user, items, cold in answers
    ]
    table = pa.Table.from_pylist(rows, schema=RECOMMENDATION_LOG_SCHEMA)
    ws.lake.write(uc.log_table, table, mode="append")
    return start


def test_popularity_and_coverage_alerts_fire_on_a_shifted_log_only(
    trained, tmp_path
) -> None:
    uc, ws, _ = trained
    batch = ws.lake.read(uc.recommendations_table).to_pandas()
    lists = batch.sort_values([uc.user, "rank"]).groupby(uc.user)[uc.item].agg(list)
    rules = {"popularity_drift", "coverage_drop"}
    assert {r.name for r in uc.alerts} == rules
    # each known user shown their own batch top-10: the reference's traffic
    since = log_answers(ws, uc, [(u, lists[u], False) for u in range(1, 201)])
    calm = monitor_recommendations(ws, uc, report_path=tmp_path / "a.html", since=since)
    assert calm.observed["popularity_psi"] < 0.05
    assert abs(calm.observed["coverage_drop"]) < 0.15
    assert not any(e.state == "firing" for e in calm.alerts)
    assert not rules & set(firing(ws.lake, uc.name))
    # everyone shown the ten most popular movies (gold popularity): shifted
    popularity = ws.lake.read("gold.recommendations_item_popularity").to_pandas()
    top = popularity.nlargest(10, "ratings_all")[uc.item].tolist()
    since = log_answers(ws, uc, [(u, top, True) for u in range(5000, 5100)])
    shifted = monitor_recommendations(
        ws, uc, report_path=tmp_path / "b.html", since=since
    )
    assert shifted.observed["popularity_psi"] > 1.0
    assert shifted.observed["coverage_drop"] > 0.9
    assert {e.rule for e in shifted.alerts if e.state == "firing"} == rules
    assert set(firing(ws.lake, uc.name)) >= rules
    page = (tmp_path / "b.html").read_text()
    assert "Alerts" in page and "popularity_drift" in page
    again = monitor_recommendations(ws, uc, report_path=None, since=since)
    assert again.alerts == []  # the same episode fires once


def canary_after_traffic(ws, uc, base: str, version: int, users: range):
    """Start a 50 % canary of `version`, serve `users`, end it; how it stood."""
    start_canary(ws, uc, version)
    try:
        time.sleep(1.0)  # the server polls the registry every 0.3 s
        with httpx.Client() as client:
            for user in users:
                client.get(f"{base}/v1/recommendations/users/{user}/items")
        time.sleep(1.5)  # a few judging rounds (AISTACK_EVAL_SECONDS 0.3)
        last = httpx.get(f"{base}/v1/recommendations/users/5/items").json()
        with tracking(ws.settings.mlflow_uri):
            rollout = read_rollout(ws.registry, uc.name)
    finally:
        with tracking(ws.settings.mlflow_uri):
            if (now := read_rollout(ws.registry, uc.name)) and now.active:
                end_rollout(
                    ws.registry, uc.name, status="stopped", reason="test", actor="t"
                )
    assert rollout is not None
    return rollout, last


def test_a_canary_showing_blockbusters_is_rolled_back_a_close_one_is_not(
    trained,
) -> None:
    uc, ws, report = trained
    version = {c.trainer: c.version for c in report.candidates}
    users = range(1, 601)  # about 300 per arm: above min_requests (100)
    with aistack_server(ws.settings.workspace, use_case=uc.name) as (base, _):
        close, _ = canary_after_traffic(ws, uc, base, version["ease"], users)
        assert close.status == "active", close.reason
        shifted, last = canary_after_traffic(ws, uc, base, version["popularity"], users)
    assert shifted.status == "rolled_back"
    assert "score PSI vs champion" in shifted.reason
    assert last["arm"] == "champion"  # user 5 is routed to the canary otherwise


def test_server_and_canary_read_item_popularity_from_gold(trained) -> None:
    """The guards' popularity is gold's table (both arms), re-read on a new
    version; counts no other source holds (2 x id + 1) prove where it comes from."""
    uc, ws, report = trained
    table, column = uc.popularity_table
    original, inputs = ws.lake.read(table), ws.lake.last_inputs(table)
    marked = original.to_pandas()
    marked[column] = marked["item_id"] * 2 + 1
    app = create_ranking_app(uc, ws.settings)
    state = app.state.server
    state.log.start()  # no polling thread: this test refreshes by hand
    if state.audit is not None:
        state.audit.start()
    version = {c.trainer: c.version for c in report.candidates}
    start_canary(ws, uc, version["ease"])
    try:
        ws.lake.write(
            table, pa.Table.from_pandas(marked), mode="overwrite", inputs=inputs
        )
        state.refresh()
        rollout, challenger = state.canary
        assert challenger.version == version["ease"] != state.loaded.version
        for loaded in (state.loaded, challenger):
            np.testing.assert_array_equal(loaded.popularity, loaded.model.items * 2 + 1)
        client = TestClient(app)
        arms = {}
        for user in range(1, 40):
            arm = "challenger" if routes_to_challenger(rollout, user) else "champion"
            if arm in arms:
                continue
            state.windows[arm].take()
            answer = client.get(f"/v1/recommendations/users/{user}/items").json()
            assert answer["arm"] == arm
            shown = [i["item_id"] * 2 + 1 for i in answer["items"]]
            assert state.windows[arm].take().scores == shown
            arms[arm] = user
        assert set(arms) == {"champion", "challenger"}
        ws.lake.write(table, original, mode="overwrite", inputs=inputs)
        state.refresh()  # a new version of gold: read again
        counts = original.to_pandas().set_index("item_id")[column]
        for loaded in (state.loaded, state.canary[1]):
            expected = counts.reindex(loaded.model.items).fillna(0).to_numpy(float)
            np.testing.assert_array_equal(loaded.popularity, expected)
    finally:
        state.stop()
        with tracking(ws.settings.mlflow_uri):
            end_rollout(
                ws.registry, uc.name, status="stopped", reason="test", actor="t"
            )
        if ws.lake.read(table).to_pandas()[column].equals(marked[column]):
            ws.lake.write(table, original, mode="overwrite", inputs=inputs)
