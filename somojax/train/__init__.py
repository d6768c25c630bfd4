"""Ensemble training: sharded jitted step, epochs, validation, orbax checkpoints, cascade.

`train(cfg, layers=, fresh=, cells=)` is what `somojax train` calls (see `somojax.train.run`);
`Trainer` (somojax.train.loop) trains one layer on any `TrainData`.
"""

from somojax.train.run import train, train_layer

__all__ = ["train", "train_layer"]
