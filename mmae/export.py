"""`python -m mmae.export` == `mmae-export`: the command lives in `mmae.cli.export`."""

from mmae.cli.export import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
