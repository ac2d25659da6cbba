"""`python -m aether_mcp`: the same as the `aether-mcp` command."""

import sys

from .cli import main

sys.exit(main())
