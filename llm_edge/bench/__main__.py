"""`python -m llm_edge.bench --url http://127.0.0.1:8080/v1 …` is `llm-edge bench …`."""

import sys

from llm_edge.bench.cli import main

sys.exit(main())
