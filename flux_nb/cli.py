"""The `flux-nb` command (also `python -m flux_nb`).

Each subcommand is a pair: `_add_<name>(subparsers)` declares its options and sets `func`, and
`_<name>(args) -> int` runs it and returns the exit code. Add one by writing the pair and
listing the first in SUBCOMMANDS. Heavy imports stay inside the run functions, so `--help`
is instant.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence

from .options import CLI, for_surface

SERVER_KEY_ENV = "FLUX_NB_SERVER_API_KEY"
# Copies of flux_nb.server.engines' names: importing the server here would slow down --help.
ENGINE_NAMES = ("preview", "flux2-klein")
KLEIN_DEFAULT_MODEL = "black-forest-labs/FLUX.2-klein-4B"
DTYPES = ("auto", "bfloat16", "float16", "float32")
RESULTS_IN_MEMORY_MB = 256  # server.results.MEMORY_BUDGET, for --help


def _add_serve(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="run the local Oxen-compatible server (offline stand-in, or FLUX.2 Klein on your GPU)",
        description="Run the local Oxen-compatible server in the foreground until Ctrl+C. With "
        "the default engine (preview) its images come from an offline stand-in, not from FLUX; "
        "--engine flux2-klein runs the real FLUX.2 Klein through diffusers (pip install "
        "'flux-nb[local]'). Results stay in memory up to "
        f"{RESULTS_IN_MEMORY_MB} MB, then the oldest go to a temporary folder (deleted when it "
        "stops); the server embedded in a notebook keeps 64 MB and only until downloaded.",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s, loopback only)"
    )
    p.add_argument(
        "--port", type=int, default=8765, help="port (default: %(default)s; 0 picks a free one)"
    )
    p.add_argument(
        "--api-key",
        default=None,
        help=(
            f"require 'Authorization: Bearer KEY' (or set {SERVER_KEY_ENV}: a flag shows in the"
            f" process list)"
        ),
    )
    p.add_argument(
        "--step-delay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="engine time per step (default: 0)",
    )
    p.add_argument(
        "--engine",
        default="preview",
        choices=ENGINE_NAMES,
        help="image engine: preview (offline stand-in) or flux2-klein (default: %(default)s)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=2,
        help="generations run at once (default: %(default)s; flux2-klein runs one at a time)",
    )
    klein = p.add_argument_group("flux2-klein engine")
    klein.add_argument(
        "--model",
        default=None,
        metavar="PATH_OR_HUB_ID",
        help=(
            f"weights: a Hugging Face model id or a saved pipeline folder (default:"
            f" {KLEIN_DEFAULT_MODEL})"
        ),
    )
    klein.add_argument(
        "--device",
        default="auto",
        metavar="{auto,cuda,mps,cpu}",
        help="auto picks cuda, then mps, then cpu; cuda:N for another GPU (default: %(default)s)",
    )
    klein.add_argument(
        "--dtype",
        default="auto",
        choices=DTYPES,
        help="auto: bfloat16 on cuda, float32 elsewhere (default: %(default)s)",
    )
    klein.add_argument(
        "--offload", action="store_true", help="model CPU offload, for GPUs too small for it all"
    )
    klein.add_argument(
        "--preload",
        action="store_true",
        help="load the model before serving, not at the first generation",
    )
    local = p.add_argument_group(
        "local-only extras",
        "Things the hosted Oxen API does not do, each off by default so that the server speaks "
        "the documented contract and no more. flux-nb's client never needs them.",
    )
    local.add_argument(
        "--progress-events",
        action="store_true",
        help="send media_generation_progress events (step, total) on /api/events",
    )
    local.add_argument(
        "--echo-drawn-seed",
        action="store_true",
        help="when a request has no seed, show the seed the server drew in the generation object",
    )
    local.add_argument(
        "--replay-events",
        action="store_true",
        help="buffer events with ids and replay them to a stream that reconnects (Last-Event-ID)",
    )
    local.add_argument(
        "--faults",
        default=None,
        metavar="JSON",
        help="enable fault injection and /_faults, e.g. '{\"error_rate\": 0.1}'",
    )
    p.add_argument(
        "--log-level",
        default="warning",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn log level; info shows every request (default: %(default)s)",
    )
    p.set_defaults(func=_serve)


def _engine_config(args: argparse.Namespace):
    """The --engine options as an EngineConfig (ValueError when they do not fit together)."""
    from .server.engines import EngineConfig

    return EngineConfig(
        args.engine, model=args.model, device=args.device, dtype=args.dtype, offload=args.offload
    )


def _serve(args: argparse.Namespace) -> int:
    from .server.app import LocalExtras, create_app
    from .server.embedded import bind_socket, make_server, url_of
    from .server.engines import EngineError
    from .server.faults import Faults

    try:
        faults = Faults.from_dict(json.loads(args.faults)) if args.faults is not None else None
    except ValueError as exc:
        print(f"flux-nb serve: --faults: {exc}", file=sys.stderr)
        return 2
    try:
        api_key = args.api_key or os.environ.get(SERVER_KEY_ENV) or None
        app = create_app(
            api_key=api_key,
            step_delay=args.step_delay,
            engine=_engine_config(args),
            workers=args.workers,
            faults=faults,
            extras=LocalExtras(
                progress_events=args.progress_events,
                echo_drawn_seed=args.echo_drawn_seed,
                replay_events=args.replay_events,
            ),
        )
    except (ValueError, EngineError) as exc:
        print(f"flux-nb serve: {exc}", file=sys.stderr)
        return 2
    runtime = app.state.flux
    if args.preload:
        print(f"flux-nb serve: loading {runtime.engine_label}...", file=sys.stderr, flush=True)
        try:
            runtime.preload()
        except EngineError as exc:
            print(f"flux-nb serve: {exc}", file=sys.stderr)
            runtime.close()
            return 1
    try:
        sock = bind_socket(args.host, args.port)
    except OSError as exc:
        print(
            f"flux-nb serve: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        runtime.close()
        return 1
    url = url_of(sock)
    if not _is_loopback(args.host):
        print(
            f"flux-nb serve: warning: listening on {args.host}, not loopback: anyone who can reach "
            f"this machine can use it{'' if api_key else ' (no API key set)'}.",
            file=sys.stderr,
        )
    what = (
        "an offline stand-in for the Oxen API"
        if runtime.engine.is_stand_in
        else "the Oxen API in front of FLUX.2 Klein on this machine"
    )
    print(
        f"flux-nb local server on {url}, engine {runtime.engine_label}: {what}. Ctrl+C stops it.",
        flush=True,
    )
    server = make_server(app, log_level=args.log_level, quiet=False)
    in_main = threading.current_thread() is threading.main_thread()
    # SIGTERM ends like Ctrl+C: streams closed, results deleted, exit code 0.
    old_term = signal.signal(signal.SIGTERM, signal.default_int_handler) if in_main else None
    try:
        server.run_foreground(sock)
    except KeyboardInterrupt:
        pass
    finally:
        runtime.close()
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _add_generate(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "generate",
        help="make image(s) from a prompt, wait, and print where they were saved",
        description="Make images from a prompt with the same options as %%%%flux. Without "
        "OXEN_API_KEY they come from the local offline stand-in (not FLUX).",
    )
    p.add_argument("prompt", nargs="+", help="the text of the image to make")
    for option in for_surface(CLI):  # the same options as %%flux (options.py)
        flags, kwargs = option.argument(CLI)
        p.add_argument(*flags, **kwargs)
    p.add_argument(
        "--output-dir",
        default=None,
        help="folder for the images (default: FLUX_NB_OUTPUT_DIR or flux_outputs)",
    )
    p.add_argument(
        "--timeout", type=float, default=600.0, help="seconds to wait (default: %(default)s)"
    )
    p.set_defaults(func=_generate)


def _generate(args: argparse.Namespace) -> int:
    from .errors import FluxError
    from .recipe import OPTION_PARAMETERS
    from .sessions import Session

    params = {k: v for k in OPTION_PARAMETERS if (v := getattr(args, k)) is not None}
    if args.image:
        params["input_image"] = args.image
    try:
        session = Session(
            output_dir=args.output_dir, announce=lambda line: print(line, file=sys.stderr)
        )
        gens = session.generate(" ".join(args.prompt), args.n, **params)
        for gen in gens if isinstance(gens, list) else [gens]:
            gen.wait(args.timeout)
            where = gen.path or f"(not saved: {gen.save_error})"
            print(f"{where}\tseed {gen.seed}\t{gen.elapsed:.2f} s")
    except FluxError as exc:
        print(f"flux-nb generate: {exc}", file=sys.stderr)
        return 1
    return 0


SUBCOMMANDS = (_add_serve, _add_generate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flux-nb", description="FLUX.2 Klein 4B in Jupyter, on Oxen.ai's inference API."
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `flux-nb` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
