"""The convert step's error type (a project OidoError: names the file and the fix)."""

from __future__ import annotations

from edge.errors import OidoError


class ConvertError(OidoError):
    """Exporting failed: bad input (head, weights, data) or an exported file failed its checks.

    Nothing in the model directory has been replaced when this is raised.
    """
