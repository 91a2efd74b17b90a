"""Pure analysis engines: arrays in, dataclass results out. numpy/scipy only; no I/O, transport or storage.

- ``xafs_stream.engines.xafs``: preprocessing (E0, normalisation, AUTOBK, FT, merge, deglitch)
- ``xafs_stream.engines.spm``: EXAFS sparse modeling over FEFF path dictionaries
- ``xafs_stream.engines.bayes``: replica-exchange MC, Bayesian free energy, peak / Hamiltonian models
- ``xafs_stream.engines.imaging``: μ-XANES features, Markov random fields, spatial statistics
"""
