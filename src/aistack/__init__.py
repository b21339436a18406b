"""AI Stack: raw data to a served, monitored model on a Delta lakehouse."""

__version__ = "0.1.0"
