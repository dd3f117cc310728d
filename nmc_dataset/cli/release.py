"""CLI: ``nmc-dataset publish BUILD --to hf:ORG/NAME|zenodo`` and ``nmc-dataset card BUILD``."""

from __future__ import annotations


def register(sub) -> None:
    """Register the ``publish`` and ``card`` subcommands."""
    p = sub.add_parser(
        "publish",
        help="upload a build folder to the Hugging Face Hub or Zenodo",
        description="Upload a build folder (checked against its manifest.json) to a Hugging Face dataset "
        "repository (token: HF_TOKEN or `hf auth login`) or to Zenodo (token: ZENODO_TOKEN; "
        "sandbox unless --production).",
    )
    p.add_argument("build", help="build folder (with manifest.json)")
    p.add_argument(
        "--to",
        metavar="TARGET",
        help="hf:ORG/NAME or zenodo (default: the recipe's dataset.publish target, if exactly one)",
    )
    p.add_argument("--revision", help="Hub tag to create (default v<dataset version>)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--sandbox", dest="production", action="store_false", default=None, help="Zenodo sandbox (default)")
    g.add_argument("--production", dest="production", action="store_true", help="the real zenodo.org")
    p.add_argument(
        "--new-version-of",
        type=int,
        metavar="DEPOSITION_ID",
        help="Zenodo: publish as a new version of this published record",
    )
    p.add_argument("--private", action="store_true", default=None, help="Hub: create the repository private")
    p.add_argument("--draft", action="store_true", help="Zenodo: upload and set metadata but do not publish")
    p.add_argument("--endpoint", metavar="URL", help="Hub URL or Zenodo API base URL (testing, mirrors, self-hosted)")
    p.add_argument("--dry-run", action="store_true", help="print files, sizes, target and version; change nothing")
    p.set_defaults(func=_cmd_publish)

    c = sub.add_parser(
        "card",
        help="re-render the dataset card (README.md) of a build folder",
        description="Re-render README.md from the build folder's files and the release metadata "
        "in manifest.json, and update the card's manifest entry.",
    )
    c.add_argument("build", help="build folder (with manifest.json)")
    c.add_argument("--figures", action="store_true", help="also redraw the figures under figures/")
    c.set_defaults(func=_cmd_card)


def _cmd_publish(args) -> int:
    from pathlib import Path

    from nmc_dataset.errors import PublishError
    from nmc_dataset.pipeline._manifest import read_manifest
    from nmc_dataset.pipeline._publish import parse_target, publish_hf, publish_zenodo

    folder = Path(args.build)
    m = read_manifest(folder)  # format check before anything else
    targets = (m.get("dataset") or {}).get("publish") or {}
    to = args.to
    if to is None:
        if len(targets) != 1:
            raise PublishError("say where to publish: --to hf:ORG/NAME or --to zenodo")
        kind = next(iter(targets))
        to = f"hf:{targets['hf']['repo_id']}" if kind == "hf" else "zenodo"
    kind, repo_id = parse_target(to)
    if kind == "hf":
        private = args.private if args.private is not None else bool((targets.get("hf") or {}).get("private"))
        publish_hf(
            folder, repo_id, revision=args.revision, endpoint=args.endpoint, private=private, dry_run=args.dry_run
        )
    else:
        zcfg = targets.get("zenodo") or {}
        production = args.production if args.production is not None else bool(zcfg.get("production"))
        publish_zenodo(
            folder,
            production=production,
            endpoint=args.endpoint,
            new_version_of=args.new_version_of or zcfg.get("new_version_of"),
            dry_run=args.dry_run,
            publish=not args.draft,
        )
    return 0


def _cmd_card(args) -> int:
    from pathlib import Path

    from nmc_dataset._util import log
    from nmc_dataset.pipeline._card import CARD, write_card
    from nmc_dataset.pipeline._manifest import update_manifest_entries, verify_manifest

    folder = Path(args.build)
    m = verify_manifest(folder, skip={CARD})
    release = dict(m.get("dataset") or {})
    exclude = list(m.get("exclude") or [])
    figures = None
    changed = [CARD]
    if args.figures:
        from nmc_dataset.pipeline._card_figures import card_figures
        from nmc_dataset.pipeline._manifest import content_files

        before = set(content_files(folder, exclude))
        figures = card_figures(folder)
        changed += sorted(
            {f["path"] for f in figures} | {"figures/index.json"} | (set(content_files(folder, exclude)) - before)
        )
        changed = [p for p in dict.fromkeys(changed) if (folder / p).is_file()]
    path = write_card(folder, {**release, "exclude": exclude}, recipe_hash=m.get("recipe_hash"), figures=figures)
    update_manifest_entries(folder, changed)
    log.info("wrote %s", path)
    return 0
