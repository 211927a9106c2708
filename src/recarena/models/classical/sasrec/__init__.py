"""SASRec (Kang & McAuley, ICDM 2018): `recommender` (the `Recommender`), `network` (the
``nn.Module`` and its loss), `batching` (training sequences) and `training` (the loop, early
stopping, checkpoints)."""

from recarena.models.classical.sasrec.network import (
    SASRecConfig,
    SASRecNetwork,
    softmax_cross_entropy,
)
from recarena.models.classical.sasrec.recommender import WEIGHTS_FILE, SASRec

__all__ = ["WEIGHTS_FILE", "SASRec", "SASRecConfig", "SASRecNetwork", "softmax_cross_entropy"]
