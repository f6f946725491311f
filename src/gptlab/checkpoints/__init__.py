"""Checkpoints on disk: reading one (``read``), Hugging Face GPT-2 in and out (``hf``), the export formats
(``formats``), plain torch models rebuilt from one (``plain``) and the one check that a checkpoint fits a
model and its data (``fit``). Below the tasks: nothing here imports Lightning."""
