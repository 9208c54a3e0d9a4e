"""LightningModules: the linear probe on fixed features."""
