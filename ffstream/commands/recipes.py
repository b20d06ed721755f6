"""`ffstream recipes`: the shipped recipes with their measured figures; `ffstream recipes show NAME` prints one, and without a NAME every field with its default."""

from __future__ import annotations

from ffstream.config import load, recipes


def recipes_command(args) -> int:
    if args.action == "show":
        if not args.name:  # every field with its default: what --set can change
            print(load(environ={}, check=False).recipe_json())
            return 0
        print(recipes.find(args.name).read_text().rstrip())
        return 0
    for name in recipes.shipped():
        recipe = recipes.read(name)
        print(f"{name}\n    {recipe.description}")
        if recipe.measured.get("figure"):
            print(f"    measured: {recipe.measured['figure']}")
        if recipe.measured.get("command"):
            print(f"    reproduce: {recipe.measured['command']}")
    print("\nffstream run --recipe NAME [--set section.key=value ...]; ffstream recipes show NAME prints its fields")
    return 0
