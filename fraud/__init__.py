"""Fraud detection core: synthetic data, features, model, local training, metrics.

This package knows nothing of Flower. The client and server packages call it:

* :mod:`fraud.generator` makes seeded, per-institution synthetic transactions
  with distinct fraud typologies; :mod:`fraud.generator_files` writes them
  atomically with a manifest;
* :mod:`fraud.features` turns a transaction frame into the model's inputs with
  fixed transforms (no data statistics, so nothing leaks between parties);
* :mod:`fraud.model` holds the MLP and weight (de)serialisation helpers;
* :mod:`fraud.train` trains and scores deterministically;
* :mod:`fraud.metrics` computes pooled metrics from summable score histograms.
"""
