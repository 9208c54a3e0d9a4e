"""Classifier heads on normalised features: the SGD-trained linear head and closed-form baselines."""
