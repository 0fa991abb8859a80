"""python -m kd.methods [NAME ...]: the recipes with every default, or the named ones."""

import argparse
import sys

from kd.errors import UserInputError
from kd.methods import RECIPES, build_recipe, describe


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kd.methods",
        description="Print training recipes: stages, loss weights, optimisers, lengths.",
    )
    parser.add_argument("names", nargs="*", help=f"recipes to show (default: all): {', '.join(RECIPES)}")
    args = parser.parse_args(argv)
    try:
        for name in args.names or list(RECIPES):
            print(describe(build_recipe(name)))
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
