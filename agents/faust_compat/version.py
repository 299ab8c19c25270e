"""The faust-streaming and aiokafka versions every adapter here was written against."""

from __future__ import annotations

FAUST_VERSION = "0.15.3"
AIOKAFKA_VERSION = "0.14.0"


def check_version() -> None:
    """Refuse to patch a Faust this package was not written for: its patches replace private
    methods whose code was read for this version only.

    >>> check_version()
    """
    import faust

    _require("faust-streaming", faust.__version__, FAUST_VERSION)


def check_aiokafka_version() -> None:
    """:func:`check_version` for a patch of aiokafka's own code.

    >>> check_aiokafka_version()
    """
    import aiokafka

    _require("aiokafka", aiokafka.__version__, AIOKAFKA_VERSION)


def _require(package: str, found: str, written_for: str) -> None:
    if found != written_for:
        raise RuntimeError(
            f"agents.faust_compat was written for {package} {written_for}, "
            f"found {found}: review its patches before upgrading"
        )
