"""PII protection: keys, encryption, masked reads, and a scan of every file of a
workspace after a full patient-risk run, serving, monitoring, a card and
`aistack forget`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pandera.polars as pa_pl
import polars as pl
import pytest

from aistack.contract import SilverTable, get_use_case
from aistack.erasure import forget
from aistack.errors import ConfigError
from aistack.governance.audit import audit_path, read, verify
from aistack.governance.keys import new_key_file
from aistack.governance.pii import (
    MASK,
    PiiCipher,
    load_cipher,
    read_table,
)
from aistack.lake.silver import REDACTED, protect_pii
from aistack.monitoring.monitor import run_monitor
from aistack.settings import load_settings
from aistack.usecases.patient_risk.source import flchain, synthetic_identity
from conftest import make_workspace
from governance.test_access import add_principals, aistack
from servers import aistack_server

IDENTITY = ["national_id", "full_name", "date_of_birth", "address", "phone"]


def source_pii(seed: int) -> list[str]:
    """Every raw PII string the source can carry for this seed (all patients)."""
    identities = synthetic_identity(flchain(), seed)
    return [v for c in IDENTITY for v in identities[c]]


def files_holding(root: Path, needles: list[str], tmp: Path) -> list[str]:
    """Files under `root` holding any of `needles` byte for byte (GNU grep -F,
    Aho-Corasick over every file, binary ones included)."""
    patterns = tmp / "needles.txt"
    patterns.write_text("\n".join(needles) + "\n")
    found = subprocess.run(
        ["grep", "-rFal", "-f", str(patterns), str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert found.returncode in (0, 1), found.stderr  # 1: nothing found
    return found.stdout.split()


def test_cipher_round_trips_with_a_fresh_nonce_and_stable_pseudonyms() -> None:
    cipher = PiiCipher(bytes(range(32)))
    sealed = cipher.encrypt(["Astrid Lockhart", "Astrid Lockhart", None])
    assert sealed[0] != sealed[1] and sealed[2] is None
    assert "Astrid" not in "".join(s for s in sealed if s)
    assert cipher.decrypt(sealed) == ["Astrid Lockhart", "Astrid Lockhart", None]
    first, again = cipher.pseudonym(["NID-1"]), cipher.pseudonym(["NID-1"])
    assert first == again and first != PiiCipher(bytes(32)).pseudonym(["NID-1"])
    with pytest.raises(ConfigError, match="not the one it was encrypted with"):
        PiiCipher(bytes(32)).decrypt(sealed[:1])


def test_a_missing_or_misplaced_key_is_an_error_naming_the_setting(
    tmp_path: Path,
) -> None:
    settings = load_settings(workspace=tmp_path / "ws")
    with pytest.raises(ConfigError, match="pii_key_env: the environment variable"):
        load_cipher(settings, {})
    with pytest.raises(ConfigError, match="must be 64 hex digits"):
        load_cipher(settings, {"AISTACK_PII_KEY": "abc"})
    (tmp_path / "ws").mkdir()
    inside = new_key_file(tmp_path / "ws" / "pii.key")
    placed = settings.model_copy(update={"pii_key_file": inside})
    with pytest.raises(ConfigError, match=r"pii_key_file: .* inside the workspace"):
        load_cipher(placed, {})
    outside = settings.model_copy(update={"pii_key_file": tmp_path / "absent.key"})
    with pytest.raises(ConfigError, match=r"pii_key_file: .* does not exist"):
        load_cipher(outside, {})


def test_reads_are_masked_unless_pii_is_revealed(patient_run, pii_key) -> None:
    ws, _ = patient_run
    uc = get_use_case("patient_risk")
    cipher = PiiCipher(bytes.fromhex(pii_key))
    masked = read_table(ws.lake, uc, "silver.patients", reveal_pii=False)
    assert set(masked.column("full_name").to_pylist()) == {MASK}
    shown = read_table(
        ws.lake, uc, "silver.patients", reveal_pii=True, cipher=cipher
    ).to_pandas()
    source = synthetic_identity(flchain(), ws.settings.seed)
    assert set(shown["full_name"]) <= set(source["full_name"])
    assert set(shown["address"]) <= set(source["address"])
    # the key column is a pseudonym in silver, the national id in bronze
    assert not set(shown["national_id"]) & set(source["national_id"])
    bronze = read_table(ws.lake, uc, "bronze.patients", reveal_pii=True, cipher=cipher)
    ids = set(bronze.column("national_id").to_pylist())
    assert len(ids) == 7874 and ids <= set(source["national_id"])
    with pytest.raises(ConfigError, match="needs the PII key"):
        read_table(ws.lake, uc, "silver.patients", reveal_pii=True)


def request_of(row: dict) -> dict:
    fields = ["national_id", "age", "sex", "kappa_flc", "lambda_flc", "mgus"]
    return {
        **{f: row[f] for f in fields},
        "creatinine": row["creatinine"],
        "sampled_at": row["sampled_at"].isoformat(),
    }


def subject_of(ws, cipher: PiiCipher) -> tuple[str, str]:
    """(national id, pseudonym) of the first patient in silver."""
    uc = get_use_case("patient_risk")
    pseudonym = ws.lake.read("silver.patients").column("national_id")[0].as_py()
    bronze = read_table(ws.lake, uc, "bronze.patients", reveal_pii=True, cipher=cipher)
    subject = next(
        n
        for n in bronze.column("national_id").to_pylist()
        if cipher.pseudonym([n])[0] == pseudonym
    )
    return subject, pseudonym


def check_no_raw_pii(root: Path, seed: int, tmp: Path) -> None:
    """No file under `root` holds a raw PII string of the source; the scan
    finds a planted one (it can fail)."""
    raw = source_pii(seed)
    assert files_holding(root, raw, tmp) == []
    control = tmp / "control" / "leak.txt"
    control.parent.mkdir(exist_ok=True)
    control.write_bytes(b"\x00binary " + raw[len(raw) // 2].encode() + b"\x00")
    assert files_holding(control.parent, raw, tmp) == [str(control)]


def check_forgotten(ws, subject: str, pseudonym: str, tmp: Path) -> None:
    """Only Delta's commit logs (file statistics) may still hold the subject's
    pseudonym: every data file of every version that held it is vacuumed."""
    uc = get_use_case("patient_risk")
    root = ws.settings.workspace
    left = files_holding(root, [pseudonym, subject], tmp)
    assert [f for f in left if "/_delta_log/" not in f] == []
    assert not any(subject in Path(f).read_text() for f in left)
    cipher = load_cipher(ws.settings, os.environ)
    after = read_table(ws.lake, uc, "bronze.patients", reveal_pii=True, cipher=cipher)
    assert subject not in after.column("national_id").to_pylist()
    assert after.num_rows == 7873
    with pytest.raises(Exception):  # noqa: B017  (files of v0 are gone)
        ws.lake.read("silver.patients", version=0)
    tags = ws.registry.client.get_model_version("patient_risk", "1").tags
    assert any(t.startswith("aistack.erasure.") for t in tags)


def test_no_raw_pii_in_any_file_after_a_run_and_nothing_of_a_forgotten_subject(
    patient_run, pii_key, tmp_path: Path
) -> None:
    source, _ = patient_run
    shutil.copytree(source.settings.workspace, tmp_path / "ws")
    ws = make_workspace(tmp_path / "ws")
    cipher = PiiCipher(bytes.fromhex(pii_key))
    check_no_raw_pii(tmp_path / "ws", ws.settings.seed, tmp_path)
    subject, pseudonym = subject_of(ws, cipher)
    assert files_holding(tmp_path / "ws" / "tables", [pseudonym], tmp_path)
    uc = get_use_case("patient_risk")
    result = forget(
        ws, uc, subject, cipher=cipher, now=datetime.now(UTC), principal="t"
    )
    erased = [r for r in read(audit_path(ws)) if r["action"] == "erase"]
    assert [r["details"]["erasure_id"] for r in erased] == [result.erasure_id]
    assert erased[0]["principal"] == "t" and subject not in str(erased[0])
    assert verify(audit_path(ws)).broken is None
    assert result.rows == {
        "bronze.patients": 1,
        "silver.patients": 1,
        "gold.patient_risk_predictions": 1,
    }
    assert all(result.vacuumed_files[t] >= 1 for t in result.rows)
    check_forgotten(ws, subject, pseudonym, tmp_path)
    again = forget(ws, uc, subject, cipher=cipher, now=datetime.now(UTC))
    assert again.total_rows == 0


@pytest.mark.slow  # a server, monitoring and three CLI runs: ~4 min on busy cores
def test_no_raw_pii_after_serving_monitoring_and_cards_then_forget_through_the_cli(
    patient_run, pii_key, tmp_path: Path
) -> None:
    source, _ = patient_run
    root = tmp_path / "ws"
    shutil.copytree(source.settings.workspace, root)
    ws = make_workspace(root)
    uc = get_use_case("patient_risk")
    subject, pseudonym = subject_of(ws, PiiCipher(bytes.fromhex(pii_key)))
    silver = ws.lake.read("silver.patients").to_pylist()
    with aistack_server(root, use_case="patient_risk") as (base, _):
        for row in silver[:5]:
            answer = httpx.post(
                f"{base}/v1/patient_risk/predict?explain=true", json=request_of(row)
            )
            assert answer.status_code == 200, answer.text
            assert "explanation" in answer.json()
    assert ws.lake.rows("ops.patient_risk_prediction_log") == 5
    run_monitor(ws, uc, window=None, report_path=root / "reports" / "monitor.html")
    cli = [sys.executable, "-m", "aistack"]
    card = subprocess.run(
        [*cli, "card", "patient_risk", "-w", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert card.returncode == 0, card.stderr
    check_no_raw_pii(root, ws.settings.seed, tmp_path)
    assert files_holding(root / "tables", [pseudonym], tmp_path)

    forget_cli = subprocess.run(
        [*cli, "forget", "patient_risk", subject, "-w", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert forget_cli.returncode == 0, forget_cli.stderr
    for table in (
        "bronze.patients",
        "silver.patients",
        "gold.patient_risk_predictions",
        "ops.patient_risk_prediction_log",
    ):
        assert table in forget_cli.stdout
    check_forgotten(ws, subject, pseudonym, tmp_path)
    recard = subprocess.run(
        [*cli, "card", "patient_risk", "--version", "1", "-w", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert recard.returncode == 0, recard.stderr
    text = (root / "reports" / "patient_risk-card-v1.html").read_text()
    assert "Erasures since training" in text


def test_quarantine_keeps_pii_encrypted_and_reasons_redacted() -> None:
    class Person(pa_pl.DataFrameModel):
        person_id: pl.String = pa_pl.Field(metadata={"pii": "key"})
        name: pl.String = pa_pl.Field(metadata={"pii": "encrypt"})

    spec = SilverTable("people", "people", lambda f: f, Person, key=("person_id",))
    cipher = PiiCipher(bytes(range(32)))
    good = pl.DataFrame({"person_id": ["p1"], "name": ["Osric Ormsby"]})
    bad = pl.DataFrame(
        {
            "person_id": ["p2"],
            "name": ["Ulla Underhill"],
            "_reason": ["column 'name' failed str_length (value Ulla Underhill)"],
        }
    )
    good, bad = protect_pii(good, bad, spec, cipher)
    assert cipher.decrypt(good["name"].to_list()) == ["Osric Ormsby"]
    assert cipher.decrypt(bad["name"].to_list()) == ["Ulla Underhill"]
    assert bad["_reason"][0] == f"column 'name' failed str_length (value {REDACTED})"


def test_pii_reads_are_masked_unless_revealed_by_read_pii_and_audited(
    patient_run, pii_key, tmp_path: Path
) -> None:
    """`aistack show`: a data engineer sees masked PII and is refused --reveal
    (exit 2 naming read_pii); an admin's reveal decrypts and is audited."""
    source, _ = patient_run
    shutil.copytree(source.settings.workspace, tmp_path / "ws")
    env = {
        "AISTACK_WORKSPACE": str(tmp_path / "ws"),
        "AISTACK_POLICY": str(tmp_path / "policy.toml"),
    }
    tokens = add_principals(env)
    cipher = PiiCipher(bytes.fromhex(pii_key))
    ws = make_workspace(tmp_path / "ws")
    names = (
        read_table(
            ws.lake,
            get_use_case("patient_risk"),
            "silver.patients",
            reveal_pii=True,
            cipher=cipher,
        )
        .column("full_name")
        .to_pylist()[:3]
    )
    show = (
        "show",
        "patient_risk",
        "silver.patients",
        "--limit",
        "3",
        "-c",
        "full_name",
    )
    masked = aistack(*show, env={**env, "AISTACK_TOKEN": tokens["dina"]})
    assert masked.returncode == 0, masked.stderr
    assert MASK in masked.stdout and not any(n in masked.stdout for n in names)
    refused = aistack(*show, "--reveal", env={**env, "AISTACK_TOKEN": tokens["dina"]})
    assert refused.returncode == 2 and "read_pii" in refused.stderr
    shown = aistack(*show, "--reveal", env={**env, "AISTACK_TOKEN": tokens["root"]})
    assert shown.returncode == 0, shown.stderr
    assert all(n in shown.stdout for n in names)
    decrypts = [r for r in read(audit_path(ws)) if r["action"] == "pii_decrypt"]
    assert [(r["principal"], r["details"]["table"]) for r in decrypts] == [
        ("root", "silver.patients")
    ]
    assert verify(audit_path(ws)).broken is None
