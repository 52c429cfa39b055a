"""Benchmarks: what compression costs, and what it saves when serving many questions per document."""
