"""`python -m services.mockupstream --port 9000` runs the mock upstream until interrupted."""

from services.mockupstream.server import main

main()
