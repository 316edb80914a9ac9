"""The scripts' tests import the scripts as modules (`import realdata`): `scripts/` is on the
path for them."""

import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))
