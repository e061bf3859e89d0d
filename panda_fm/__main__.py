"""``python -m panda_fm``: the ``panda-fm`` command line (:func:`panda_fm.cli.main`)."""

from __future__ import annotations

from panda_fm.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
