"""The model: loading a base model (the embedded GGUF, a folder or a hub id), k-bit quantisation, LoRA."""
