"""The worker's HTTP API (see docs and agents/api/server.py)."""
