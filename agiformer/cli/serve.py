"""`agiformer serve`: the local web playground (`agiformer.serve`), bound to 127.0.0.1 unless --host says otherwise."""

from __future__ import annotations

import sys
from pathlib import Path

from agiformer.cli.common import add_command, positive_int
from agiformer.errors import AGIFormerError


def register(commands) -> None:
    serve = add_command(commands, "serve", help="a local web playground: stream samples, turn the effort knob, "
                        "see which bytes surprised the model", run=run_serve, examples="""\
  agiformer serve out/demo-en                 # one run, or a folder of runs: pick a checkpoint on the page
  agiformer serve out --port 8080""")
    serve.add_argument("directory", help="a checkpoint, a run directory, or a folder of runs; nothing outside it is loaded")
    serve.add_argument("--port", type=positive_int, default=8000)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    serve.add_argument("--max-generations", type=positive_int, default=2, help="generations streaming at once")


def run_serve(args) -> None:
    try:
        import uvicorn

        from agiformer.serve.app import build_app
    except ImportError as error:
        raise AGIFormerError(f"agiformer serve needs its extra ({error.name} is missing): "
                             "pip install 'agiformer[serve]'") from None
    directory = Path(args.directory)
    if not directory.is_dir():
        raise AGIFormerError(f"{directory} is not a directory of checkpoints")
    app = build_app(directory, max_generations=args.max_generations)
    print(f"agiformer playground for {directory} at http://{args.host}:{args.port}/ (Ctrl-C stops it)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
