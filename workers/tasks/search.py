"""Search turn tasks (gpu queue)."""
