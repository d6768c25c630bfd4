"""The synthetic Earth (docs/synthetic-earth.md): weather, a bucket-model truth, stations and an ERA5-like
reanalysis, written in the raw formats of real data so `prepare` reads it like real data."""

from somojax.synth.earth import simulate
from somojax.synth.globe import generate

__all__ = ["generate", "simulate"]
