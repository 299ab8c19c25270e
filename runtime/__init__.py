"""What the worker processes run on: settings from the environment, topic names and topic
administration. Below ``agents/`` and ``retrain/``; above ``streams/`` and ``schemas/``."""
