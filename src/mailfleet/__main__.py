"""``python -m mailfleet`` and the ``mailfleet`` command."""

from __future__ import annotations

import gc


def main() -> None:
    """Run the ``mailfleet`` command line.

    Its modules are imported with the cyclic garbage collector paused: an import
    builds objects that live as long as the process, and collecting over them
    while they are made is a tenth of a command's start-up, for nothing.
    """
    gc.disable()
    try:
        from mailfleet.cli import main as run  # imported here: the point of this module
    finally:
        gc.enable()
    run()


if __name__ == "__main__":
    main()
