"""``python -m freshtoken``: the ``freshtoken`` command, for when its script is not on PATH."""

from freshtoken.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
