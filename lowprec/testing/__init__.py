"""Reusable testing helpers: hypothesis strategies for formats, values and LLM-like tensors."""
