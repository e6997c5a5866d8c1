"""``python -m freshtoken.cli``: the same as ``freshtoken``."""

from . import main

if __name__ == "__main__":
    raise SystemExit(main())
