"""`python -m homegw` is the same as the `homegw` console script."""

from homegw.cli import main

raise SystemExit(main())
