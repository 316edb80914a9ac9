"""`python -m mmae.features` == `mmae-features`: the command lives in `mmae.cli.features`."""

from mmae.cli.features import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
