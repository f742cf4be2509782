"""Anomaly detection: signal features → ONNX anomaly score → fault signature → alerts.

See :mod:`gateway.detect.detector` for the wiring and ``models/README.md`` for the model.
"""
