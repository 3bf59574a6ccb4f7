"""Campaign and experiment configuration: models, loading, introspection, grids."""
