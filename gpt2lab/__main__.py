"""`python -m gpt2lab`, which torchrun needs."""

import sys

from .cli import main

sys.exit(main())
