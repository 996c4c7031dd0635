"""Training logic as plain functions over models (the Ray Train loop calls these)."""
