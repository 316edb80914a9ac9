"""`python -m mmae.train` == `mmae-train`: the command lives in `mmae.cli.train`."""

from mmae.cli.train import main, train

__all__ = ["main", "train"]

if __name__ == "__main__":
    main()
