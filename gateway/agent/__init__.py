"""The reasoning layer: a local LLM that diagnoses alerts and proposes through the gate."""
