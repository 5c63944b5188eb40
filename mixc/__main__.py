"""``python -m mixc`` is the ``mixc`` command."""
from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
