"""Training sets, fitting, gates, metrics, reference profiles and MLflow tracking."""
