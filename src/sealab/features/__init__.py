"""Frozen-backbone feature extraction and the keyed on-disk cache."""
