"""Governance: principals and grants, PII protection, erasure, the audit log,
retention."""
