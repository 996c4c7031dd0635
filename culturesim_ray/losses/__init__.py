"""Losses as pure math over embeddings."""
