"""``make bench``: seconds per training epoch of sealab's probe against plain PyTorch loops."""
