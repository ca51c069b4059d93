"""``python -m orchlab``: the same as the ``orchlab`` command."""

from orchlab.cli import main

raise SystemExit(main())
