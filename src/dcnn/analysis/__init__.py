"""Understanding models: per-layer summaries (shapes, parameters, MACs, activation memory,
receptive fields) and the memory a training step needs, estimated and measured."""
