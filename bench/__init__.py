"""Benchmarks: code that measures, prints a table and writes JSON under ``bench/results/``."""
