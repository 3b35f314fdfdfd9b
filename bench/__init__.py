"""Benchmarks: `./run bench`. Figures are printed and saved under bench/results/."""
