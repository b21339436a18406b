"""The `aistack` command: one thin module per area of the flow."""
# ruff: noqa: I001  (--help lists commands in the order they register: the flow's)

from aistack.cli import pipeline, registry, serving, monitoring, governance, privacy
from aistack.cli._app import app, main

__all__ = [
    "app",
    "governance",
    "main",
    "monitoring",
    "pipeline",
    "privacy",
    "registry",
    "serving",
]
