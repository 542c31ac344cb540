"""Data handling of the core: grouped splits (``splits``), joint augmentation (``augment``), the converted
format (``converted``), loading with dataset parameters (``loading``) and summaries (``inspect``).

Submodules are imported where used, so that the CLI starts without torch."""
