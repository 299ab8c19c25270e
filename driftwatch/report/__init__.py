"""The drift report: one self-contained HTML page per model (``driftwatch report`` offline,
``GET /v1/models/{tenant}/{model}/report`` live). ``model`` is the data, ``render`` the page."""
