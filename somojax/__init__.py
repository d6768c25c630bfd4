"""somojax: global daily soil moisture from in-situ data with an EA-LSTM ensemble in JAX.

A re-implementation of SoMo.ml (O & Orth, Sci. Data 2021). Data flows one way:
raw files -> `prepare` -> analysis-ready Zarr -> `data` -> `models` -> `train` -> checkpoint
-> `infer` -> prediction Zarr -> `evaluate`. The synthetic Earth (`synth`) writes raw files.
"""

__version__ = "0.1.0"
