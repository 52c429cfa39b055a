"""Evaluation: QA data, metrics, methods and the runner."""
