"""Governance: proposals, the gate that judges them, and the verdicts it issues."""
