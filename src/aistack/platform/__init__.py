"""The platform layer: storage, stages, training, registry. It knows no use case."""
