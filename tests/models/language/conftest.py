"""The tiny language models the LM tests build from scratch (`tests.lm.conftest`), for the
tests of the language-model recommenders."""

from tests.lm.conftest import tiny_bert_dir, tiny_gguf_file, tiny_llama_dir

__all__ = ["tiny_bert_dir", "tiny_gguf_file", "tiny_llama_dir"]
