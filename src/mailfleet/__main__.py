"""``python -m mailfleet``: the same as the ``mailfleet`` command."""

from mailfleet.cli import main

if __name__ == "__main__":
    main()
