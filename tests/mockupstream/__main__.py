"""`python -m tests.mockupstream --port 9000` runs the mock upstream until interrupted."""

from tests.mockupstream.server import main

main()
