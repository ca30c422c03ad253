"""Understanding models: per-layer summaries (shapes, parameters)."""
