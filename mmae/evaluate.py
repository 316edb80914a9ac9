"""`python -m mmae.evaluate` == `mmae-eval`: the command lives in `mmae.cli.evaluate`."""

from mmae.cli.evaluate import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
