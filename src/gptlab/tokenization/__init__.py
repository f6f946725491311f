"""Tokenizers: the Tokenizer interface, each kind, and GPT-2/Hugging Face vocabulary files."""
