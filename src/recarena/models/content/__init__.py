"""Content models that read item text without a language model: TF-IDF and BM25 profiles."""
