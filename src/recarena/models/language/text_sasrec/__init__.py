"""SASRec over language-model text vectors (UniSRec-style) and its joint training with the
encoder (Recformer-style): `recommender` (`TextSASRec`), `joint` (`JointTextSASRec`) and
`network` (the text item embeddings)."""

from recarena.models.language.text_sasrec.joint import JointTextSASRec
from recarena.models.language.text_sasrec.network import (
    JointTextItemEmbedding,
    MoEAdaptor,
    TextItemEmbedding,
)
from recarena.models.language.text_sasrec.recommender import TextSASRec

__all__ = [
    "JointTextItemEmbedding",
    "JointTextSASRec",
    "MoEAdaptor",
    "TextItemEmbedding",
    "TextSASRec",
]
