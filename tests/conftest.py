import os
import sys

# Tests import their shared builders as `helpers`.
sys.path.insert(0, os.path.dirname(__file__))
