import sys

from bench.engine import pin

pin(sys.argv[1:])  # re-executes with this checkout's (or a snapshot's) engine first on the path

from bench.cli import main  # noqa: E402

sys.exit(main())
