"""Benchmark harness: FIM cases, sandboxed scoring and text metrics."""
