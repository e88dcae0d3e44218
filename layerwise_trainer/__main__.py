"""`python -m layerwise_trainer`: the same command line as `layerwise-trainer`."""

import sys

from .app.cli import main

sys.exit(main())
