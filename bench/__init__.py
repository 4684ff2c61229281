"""Benchmarks (`make bench`): our figures as ratios against the peer tool, same run."""
