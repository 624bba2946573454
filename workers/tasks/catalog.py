"""Catalog embedding tasks (gpu queue)."""
