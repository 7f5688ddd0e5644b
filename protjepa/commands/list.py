"""``protjepa list``: the registered encoders and objectives; third-party ones say where they are defined."""
from __future__ import annotations


def configure(parser) -> None:
    parser.add_argument("--plugins", nargs="*", default=[], help="extra plugin modules to import first")


def run(args) -> int:
    from protjepa.registry import ENCODERS, OBJECTIVES, load_plugins

    load_plugins(args.plugins)
    for title, registry in (("encoders", ENCODERS), ("objectives", OBJECTIVES)):
        print(f"{title}:")
        for entry in registry.entries():
            doc = (entry.builder.__doc__ or "").strip().splitlines()
            plugin = "" if entry.builder.__module__.startswith("protjepa.") else f"  [plugin: {entry.where}]"
            print(f"  {entry.name:<12} {doc[0] if doc else ''}{plugin}")
    return 0
