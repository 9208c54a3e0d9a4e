"""Frozen feature extractors: the ``Backbone`` interface (base), any timm model with its
checkpoint formats (timm_backbone, checkpoint), and seeded random features (random_features)."""
