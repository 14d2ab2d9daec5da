"""Evaluation commands: the same code paths as the worker, scored on labelled data."""
