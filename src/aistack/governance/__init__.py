"""Governance: principals and grants, the audit log, retention."""
