"""``protjepa validate FILE...``: recipes against the schema, the registries and plugin imports, and
what ``train`` would refuse on this machine (``data.batch_tokens: fill`` or ``train.device: cuda``
without a GPU); experiment files (they have ``variants:``) as experiments, every run's recipe
resolved. No training."""
from __future__ import annotations


def configure(parser) -> None:
    parser.add_argument("recipes", nargs="+", metavar="FILE",
                        help="recipe or experiment YAML files, or shipped ones' names (protjepa recipes)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe value, e.g. objectives.1.weight=0.3 (recipes only)")
    parser.add_argument("--print", dest="print_recipe", action="store_true",
                        help="print the resolved recipe, every default filled in (experiments: each run's)")


def is_experiment(name: str) -> bool:
    from protjepa import shipped
    from protjepa.yamlio import peek_mapping

    return "variants" in peek_mapping(shipped.find(name))  # unreadable: a recipe, whose loading says why


def check(path: str, overrides: list, print_recipe: bool) -> None:
    """Print ``ok`` and what the file resolves to, or raise its error."""
    from protjepa.errors import UserError
    from protjepa.recipe import dump_recipe, load_recipe, zero_weight_notes

    if is_experiment(path):
        from protjepa.experiment.spec import load_experiment

        if overrides:
            raise UserError(f"{path}: --set applies to recipes; an experiment file has its own set:")
        experiment = load_experiment(path)
        print(f"ok   {path}: experiment {experiment.spec.name} "
              f"[{', '.join(run.label for run in experiment.trained_runs)}]")
        recipes = [run.recipe for run in experiment.trained_runs] if print_recipe else []
    else:
        recipe = load_recipe(path, overrides, "--set", this_machine=True)  # what train refuses here, refused here
        objectives = ", ".join(f"{s.id}x{s.weight:g}" for s in recipe.objectives)
        unbuilt = recipe.encoder.component
        notes = "".join(f" ({note})" for note in zero_weight_notes(recipe))
        print(f"ok   {path}: {recipe.name} [{objectives}]{notes}" + (
            f" (encoder {unbuilt} imported, its arguments checked, not called: "
            "train checks that it returns an encoder; a recipe is trusted code)" if unbuilt else ""))
        recipes = [recipe] if print_recipe else []
    for recipe in recipes:
        print(dump_recipe(recipe) if len(recipes) == 1 else f"---\n{dump_recipe(recipe)}", end="")


def run(args) -> int:
    from protjepa.errors import UserError
    from protjepa.recipe import RecipeError, parse_assignment

    try:
        overrides = [parse_assignment(a) for a in args.overrides]
    except RecipeError as exc:  # reported against each recipe, like any other --set error
        for path in args.recipes:
            print(f"FAIL {path}: {exc}")
        return 1
    failed = 0
    for path in args.recipes:
        try:
            check(path, overrides, args.print_recipe)
        except UserError as exc:
            print(f"FAIL {exc}")
            failed += 1
    return 1 if failed else 0
