"""``python -m pyro_causalgen`` runs the ``causalgen`` command line."""

import sys

from pyro_causalgen.cli import main

sys.exit(main())
