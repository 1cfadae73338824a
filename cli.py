"""Top-level entry: runs the fleetsim typer app that lives in ``simulator.cli``.

The app lives inside the package so that installing fleetsim adds no top-level ``cli`` module to
site-packages (where it could clash with other distributions); ``python cli.py ...`` in a checkout
and the installed ``fleetsim`` console script run the same app.
"""

from simulator.cli import main

if __name__ == "__main__":
    main()
