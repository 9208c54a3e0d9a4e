"""sealab's Hydra sweeper plugin (sealab_sweeper.SealabSweeper); the rest of sealab is the sealab package."""
