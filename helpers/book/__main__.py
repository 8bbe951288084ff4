"""``python -m helpers.book --profile P``: build the course book of a build (see helpers/book/__init__.py)."""

from helpers.book import main

raise SystemExit(main())
