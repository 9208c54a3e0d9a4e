# Hydra's config package: sealab-train composes from pkg://sealab.conf (see pyproject.toml).
