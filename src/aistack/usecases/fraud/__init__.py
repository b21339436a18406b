"""Fraud detection on card transactions (Le Borgne et al. handbook design)."""

from __future__ import annotations

from datetime import timedelta

from aistack.contract import (
    AlertRule,
    Evaluation,
    Gates,
    Labels,
    Monitoring,
    RolloutGuards,
    Serving,
    SilverTable,
    Split,
    UseCase,
)
from aistack.usecases.fraud import (
    contract,
    features,
    metrics,
    model,
    source,
    transforms,
)

use_case = UseCase(
    name="fraud",
    description="Card fraud scoring: anomaly detection and supervised trees.",
    params=source.FraudParams,
    read_sources=source.read_sources,
    silver=(
        SilverTable(
            "customers",
            "customers",
            transforms.lower_case_columns,
            contract.Customer,
            key=("customer_id",),
        ),
        SilverTable(
            "terminals",
            "terminals",
            transforms.lower_case_columns,
            contract.Terminal,
            key=("terminal_id",),
        ),
        SilverTable(
            "transactions",
            "transactions",
            transforms.lower_case_columns,
            contract.Transaction,
            key=("transaction_id",),
            latest_by="updated_at",
            references={
                "customer_id": "silver.customers.customer_id",
                "terminal_id": "silver.terminals.terminal_id",
            },
        ),
    ),
    views=(features.customer_spending, features.terminal_risk),
    request_features=features.request_features,
    labels=Labels(
        table="silver.transactions",
        id="transaction_id",
        timestamp="tx_datetime",
        label="tx_fraud",
        columns=("customer_id", "terminal_id", "tx_amount"),
        delay=timedelta(days=features.LABEL_DELAY_DAYS),
    ),
    split=Split(train_days=7, delay_days=features.LABEL_DELAY_DAYS, test_days=7),
    # the handbook's protocol: cards known compromised are out of the test set
    evaluation=Evaluation(exclude_known_positives="customer_id"),
    trainers=model.trainers,
    metrics=metrics.metrics,
    gates=Gates(
        primary_metric="average_precision",
        metric_floors={"roc_auc": 0.75, "average_precision": 0.3},
        irrelevant_columns=("transaction_id",),
        monotonic={"tx_amount": "increasing"},
        max_latency_ms=50.0,
    ),
    serving=Serving(request=contract.TransactionRequest, threshold=0.5),
    monitoring=Monitoring(
        alerts=(
            AlertRule("features_drifted", "drift_share", 0.3),
            AlertRule("performance_dropped", "performance_drop", 0.1),
            AlertRule("errors", "error_rate", 0.01),
            AlertRule("slow", "latency_p99_ms", 50.0),
        ),
        guards=RolloutGuards(
            max_error_rate=0.01,
            max_latency_p99_ms=50.0,
            max_score_psi=0.25,
            max_performance_drop=0.05,
            min_requests=100,
            promote_after=1000,
        ),
        business=metrics.fraud_caught,
    ),
)
