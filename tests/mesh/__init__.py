"""Tests of the pure mesh transport core."""
