"""Collaborative models that read interactions only: popularity and random baselines,
ItemKNN, EASE, ALS/BPR (the `implicit` library) and SASRec."""
