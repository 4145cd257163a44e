"""Shared vocabulary: models, errors and the clock. Standard library only."""
