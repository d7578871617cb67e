"""Interop with Hugging Face transformers: export to and import from GPT-2, Llama and Qwen3 models."""
