"""The faust-streaming version every adapter here was written against."""

from __future__ import annotations

FAUST_VERSION = "0.15.3"
AIOKAFKA_VERSION = "0.14.0"


def check_version() -> None:
    """Refuse to patch a Faust this package was not written for: its patches replace private
    methods whose code was read for this version only.

    >>> check_version()
    """
    import faust

    if faust.__version__ != FAUST_VERSION:
        raise RuntimeError(
            f"agents.faust_compat was written for faust-streaming {FAUST_VERSION}, "
            f"found {faust.__version__}: review its patches before upgrading"
        )


def check_aiokafka_version() -> None:
    """:func:`check_version` for a patch of aiokafka's own code.

    >>> check_aiokafka_version()
    """
    import aiokafka

    if aiokafka.__version__ != AIOKAFKA_VERSION:
        raise RuntimeError(
            f"agents.faust_compat was written for aiokafka {AIOKAFKA_VERSION}, "
            f"found {aiokafka.__version__}: review its patches before upgrading"
        )
