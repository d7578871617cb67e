"""Interop with Hugging Face transformers (export and import commands arrive with a later issue)."""
