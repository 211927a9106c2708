"""Every way of using a pretrained language model as a recommender: frozen item vectors
(`frozen`), a two-tower model trained with its encoder (`two_tower`), SASRec over text
vectors and jointly with the encoder (`text_sasrec`), a fine-tuned cross-encoder
(`cross_encoder`) and a decoder ranking by log-likelihood (`generative`). Helpers they
share are in `common`."""
