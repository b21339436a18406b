"""Bronze -> silver transforms of the fraud use case: pure, one row out per row in."""

from __future__ import annotations

import polars as pl


def lower_case_columns(bronze: pl.DataFrame) -> pl.DataFrame:
    """Handbook column names (`TX_AMOUNT`) to silver names (`tx_amount`).

    Typing and validation are the platform's, from the contract.
    """
    return bronze.rename({name: name.lower() for name in bronze.columns})
