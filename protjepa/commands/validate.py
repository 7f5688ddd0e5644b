"""``protjepa validate RECIPE...``: schema, registries and plugin imports, no training."""
from __future__ import annotations


def configure(parser) -> None:
    parser.add_argument("recipes", nargs="+", help="recipe YAML files")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe value, e.g. objectives.1.weight=0.3")
    parser.add_argument("--print", dest="print_recipe", action="store_true", help="print the resolved recipe")


def run(args) -> int:
    from protjepa.errors import UserError
    from protjepa.recipe import RecipeError, dump_recipe, load_recipe, parse_assignment

    try:
        overrides = [parse_assignment(a) for a in args.overrides]
    except RecipeError as exc:  # reported against each recipe, like any other --set error
        for path in args.recipes:
            print(f"FAIL {path}: {exc}")
        return 1
    failed = 0
    for path in args.recipes:
        try:
            recipe = load_recipe(path, overrides)
        except UserError as exc:
            print(f"FAIL {exc}")
            failed += 1
            continue
        objectives = ", ".join(f"{s.id}x{s.weight:g}" for s in recipe.objectives)
        unbuilt = recipe.encoder.component
        print(f"ok   {path}: {recipe.name} [{objectives}]" + (
            f" (encoder {unbuilt} imported, its arguments checked, not called: "
            "train checks that it returns an encoder; a recipe is trusted code)" if unbuilt else ""))
        if args.print_recipe:
            print(dump_recipe(recipe))
    return 1 if failed else 0
