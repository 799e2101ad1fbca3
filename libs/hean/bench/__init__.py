"""Benchmarks (``make bench``): every figure next to a reference measured in the same run.

Shared machines are noisy, so results are ratios within one run, never absolute targets, and
no test asserts on time.
"""
