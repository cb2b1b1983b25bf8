import sys
from pathlib import Path

# the shared test helpers (synthetic IEMOCAP tree) live one folder up
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
