"""Feature-space augmenters: one interface, ``augment(x, y, head) -> (x, y)``."""
