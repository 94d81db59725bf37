"""Write the API's OpenAPI document: ``python -m mailfleet.api.spec [PATH]``.

``make openapi`` writes ``docs/openapi.json`` with it; a test compares the
checked-in document with the one the server serves.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from ..settings import Settings
from .app import create_app
from .tenants import Tenants

__all__ = ["document", "main"]


def document() -> dict[str, Any]:
    """The OpenAPI document of the API (no store is opened)."""
    return create_app(Tenants(Settings())).openapi()


def main(argv: list[str] | None = None) -> None:
    """Print the document, or write it to the path given."""
    args = sys.argv[1:] if argv is None else argv
    text = json.dumps(document(), indent=2, sort_keys=True) + "\n"
    if args:
        Path(args[0]).write_text(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
