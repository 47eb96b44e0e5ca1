"""`python train.py ...` and `accelerate launch train.py ...` behave like `trickbox train ...`."""
import sys

from trickbox.cli import run

if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or args[0] not in ("train", "sweep", "ablate", "eval", "predict", "list", "report", "new-plugin", "-h",
                                   "--help"):
        if "--sweep" in args:
            i = args.index("--sweep")
            args = (["sweep", args[i + 1], "--distributed-trial", *args[:i], *args[i + 2:]] if i + 1 < len(args)
                    else ["sweep"])
        else:
            args = ["train", *args]
    sys.argv = [sys.argv[0], *args]
    run()
