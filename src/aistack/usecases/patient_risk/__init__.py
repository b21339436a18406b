"""Patient risk: death within five years of a serum free light chain sample.

survival/flchain with a synthetic identity per patient (PII, protected by the
platform); XGBoost and a logistic regression, gated on discrimination,
calibration, risk rising with age and no use of the pseudonymous id.
"""

from __future__ import annotations

from datetime import timedelta

from aistack.contract import (
    Evaluation,
    Gates,
    Labels,
    Serving,
    SilverTable,
    Split,
    UseCase,
)
from aistack.usecases.patient_risk import contract, model, source

use_case = UseCase(
    name="patient_risk",
    description="Death within 5 years of a free light chain sample (flchain).",
    params=source.PatientParams,
    read_sources=source.read_sources,
    silver=(
        SilverTable(
            "patients",
            source.SOURCE,
            contract.patients,
            contract.Patient,
            key=("national_id",),
        ),
    ),
    views=(),
    row_features=model.ROW_FEATURES,
    request_features=model.request_features,
    labels=Labels(
        table="silver.patients",
        id="national_id",
        timestamp="sampled_at",
        label="died_within_5y",
        columns=("age", "sex", "kappa_flc", "lambda_flc", "creatinine", "mgus"),
        delay=timedelta(days=contract.HORIZON_DAYS),
    ),
    split=Split(kind="stratified", fractions=(0.7, 0.3), seed=11),
    evaluation=Evaluation(
        slices={"age band": model.age_band, "sex": model.sex},
        intended_use=model.INTENDED_USE,
    ),
    trainers=model.trainers,
    metrics=model.metrics,
    gates=Gates(
        primary_metric="roc_auc",
        metric_floors={"roc_auc": 0.8, "calibration_error": 0.05},
        irrelevant_columns=("national_id",),
        monotonic={"age": "increasing"},
        max_latency_ms=200.0,  # a review list, not a real-time decision
    ),
    serving=Serving(request=contract.PatientRequest, threshold=0.5),
)
