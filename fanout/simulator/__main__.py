"""``python -m fanout.simulator``: serve a simulator in the foreground (see :func:`cli.main`)."""

from fanout.simulator.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
