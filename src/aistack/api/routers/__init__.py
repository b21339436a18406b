"""API routers: health, predict, metrics."""
