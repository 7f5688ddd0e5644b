"""``protjepa recipes``: the shipped recipes and experiment files with their descriptions;
``protjepa recipes copy NAME [DEST]`` copies one out for editing (torchtune's ``tune ls`` / ``tune cp``).

Every command that takes a recipe or an experiment file also takes a shipped one's name.
"""
from __future__ import annotations


def configure(parser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.add_parser("list", help="list them (the default)")
    copy = sub.add_parser("copy", help="copy one out for editing")
    copy.add_argument("name", help="a shipped name: mlm_jepa_masked, experiments/smoke")
    copy.add_argument("dest", nargs="?", help="file or folder to copy to (default: NAME.yaml here)")


def run(args) -> int:
    from protjepa import shipped

    if args.action == "copy":
        print(f"wrote {shipped.copy(args.name, args.dest)}")
        return 0
    entries = shipped.shipped()
    width = max(len(e.name) for e in entries)
    for entry in entries:
        print(f"{entry.name:<{width}}  {entry.description}")
    return 0
