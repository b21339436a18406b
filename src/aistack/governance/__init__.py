"""Governance: who may see and do what, PII protection, erasure, audit."""
