"""The HTTP API: `main.py` assembles routers; each router owns its routes."""
