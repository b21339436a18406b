"""Source and silver table declarations check themselves when built."""

from __future__ import annotations

import pytest

from aistack.contract import PostgresTable, SilverTable
from aistack.errors import DeclarationError
from aistack.usecases.fraud.contract import Transaction


def same(frame):
    return frame


def test_latest_by_needs_a_key_and_a_contract_column() -> None:
    with pytest.raises(DeclarationError, match="latest_by needs a key"):
        SilverTable("t", "t", same, Transaction, latest_by="updated_at")
    with pytest.raises(DeclarationError, match="'changed' is not in the contract"):
        SilverTable(
            "t", "t", same, Transaction, key=("transaction_id",), latest_by="changed"
        )


def test_a_postgres_table_needs_a_postgresql_url_and_a_table() -> None:
    with pytest.raises(DeclarationError, match="url must start with postgresql://"):
        PostgresTable("transactions", "mysql://db/x", "t")
    with pytest.raises(DeclarationError, match="table and watermark"):
        PostgresTable("transactions", "postgresql://db/x", "")
    with pytest.raises(DeclarationError, match="lower snake case"):
        PostgresTable("Bad Source", "postgresql://db/x", "t")
