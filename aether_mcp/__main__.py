"""`python -m aether_mcp`: the same as the `aether-mcp` command."""

import sys

from .adapters.cli import main

sys.exit(main())
