"""Drift, live performance, consistency, alerts, A/B analysis and the HTML report."""
