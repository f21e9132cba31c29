"""``python -m modelgate.cli``."""

from modelgate.cli import main

main()
