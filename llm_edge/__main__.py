import sys

from llm_edge.cli import main

sys.exit(main())
