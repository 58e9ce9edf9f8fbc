"""Benchmarks: each module measures logitkit against its baselines in one process and prints one
JSON object with both figures, their ratios and whether the target is met.

Run one with ``logitkit bench NAME [--quick]`` or ``python -m logitkit.benchmarks.NAME [--quick]``;
the baselines come with the ``bench`` extra. Targets are reported here, never asserted in tests.
"""
