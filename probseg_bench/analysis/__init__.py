"""Latent-space diagnostics of a stored run and the seed paper's Figures 3-8 (``probseg-bench analyze``).

:mod:`.loading` finds a stored fold and rebuilds its model and test split; :mod:`.latent` computes the numbers
behind the figures; :mod:`.figures` draws them with matplotlib (Agg); :mod:`.report` writes the HTML report.
"""
