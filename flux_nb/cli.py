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
from typing import TYPE_CHECKING

from .core._options import CLI, for_surface

if TYPE_CHECKING:
    from starlette.applications import Starlette

SERVER_KEY_ENV = "FLUX_NB_SERVER_API_KEY"
# Copies of flux_nb.server.engines' names: importing the server here would slow down --help.
ENGINE_NAMES = ("preview", "flux2-klein")
KLEIN_DEFAULT_MODEL = "black-forest-labs/FLUX.2-klein-4B"
DTYPES = ("auto", "bfloat16", "float16", "float32")
MEMORY_CHOICES = ("auto", "gpu", "model-offload", "group-offload", "sequential-offload")
QUANTIZE_HELP = (
    "PART=LEVEL, PART text-encoder or transformer, LEVEL none, int8, fp8, int4 or auto (torchao,"
    " weight-only; repeat for both parts). auto quantizes only what the memory plan needs"
)
# server.app.LocalExtras' fields, each a flag of `serve` that is off by default
LOCAL_EXTRAS = {
    "progress_events": "send media_generation_progress events (step, total) on /api/events",
    "echo_drawn_seed": "when a request has no seed, show the seed the server drew in the "
    "generation object",
    "replay_events": "buffer events with ids and replay them to a stream that reconnects "
    "(Last-Event-ID)",
}
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
    _add_access_options(p)
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
    _add_klein_options(p.add_argument_group("flux2-klein engine"))
    _add_local_extras(
        p.add_argument_group(
            "local-only extras",
            "Things the hosted Oxen API does not do, each off by default so that the server "
            "speaks the documented contract and no more. flux-nb's client never needs them.",
        )
    )
    p.add_argument(
        "--log-level",
        default="warning",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn log level; info shows every request (default: %(default)s)",
    )
    p.set_defaults(func=_serve)


def _add_access_options(p: argparse.ArgumentParser) -> None:
    """Who may use the server, and over what: keys, queue limits, URL fetching, TLS."""
    p.add_argument(
        "--api-key",
        default=None,
        help=(
            f"require 'Authorization: Bearer KEY' (or set {SERVER_KEY_ENV}: a flag shows in the"
            f" process list)"
        ),
    )
    p.add_argument(
        "--keys-file",
        default=None,
        metavar="PATH",
        help="accept a key per person from this file (made by `flux-nb keys add`); re-read when"
        " it changes, so a removed key is refused at once",
    )
    p.add_argument(
        "--max-queued-per-key",
        type=int,
        default=1000,
        metavar="N",
        help="generations one key may have waiting; more are answered 429 with Retry-After"
        " (default: %(default)s)",
    )
    p.add_argument(
        "--allow-private-urls",
        action="store_true",
        help="fetch input_image URLs on loopback, private and link-local addresses too (refused"
        " by default: only for a trusted network)",
    )
    p.add_argument("--ssl-certfile", default=None, metavar="PATH", help="serve HTTPS: certificate")
    p.add_argument("--ssl-keyfile", default=None, metavar="PATH", help="serve HTTPS: private key")


def _add_klein_options(klein: argparse._ArgumentGroup) -> None:
    """The flux2-klein engine's weights, device, dtype, memory placement and preloading."""
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
        help="auto picks cuda (every GPU the memory plan fits), then mps, then cpu; cuda:N for "
        "one GPU; several comma-separated (cuda:0,cuda:1) run one pipeline and one generation "
        "on each at once (default: %(default)s)",
    )
    klein.add_argument(
        "--dtype",
        default="auto",
        choices=DTYPES,
        help="auto: bfloat16 on GPUs that run it natively (CUDA capability >= 8.0), float16 on "
        "older ones (T4, V100), float32 on the CPU unless it does not fit (default: %(default)s)",
    )
    _add_memory_options(klein)
    klein.add_argument(
        "--offload",
        action="store_const",
        const="model-offload",
        dest="memory",
        help="the same as --memory model-offload",
    )
    klein.add_argument(
        "--preload",
        action="store_true",
        help="load the model before serving, not at the first generation",
    )


def _add_local_extras(local: argparse._ArgumentGroup) -> None:
    """What the local server can do beyond the hosted API's contract, each off by default."""
    for name, help_text in LOCAL_EXTRAS.items():
        local.add_argument(f"--{name.replace('_', '-')}", action="store_true", help=help_text)
    local.add_argument(
        "--faults",
        default=None,
        metavar="JSON",
        help="enable fault injection and /_faults, e.g. '{\"error_rate\": 0.1}'",
    )


def _add_memory_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--memory",
        default="auto",
        choices=MEMORY_CHOICES,
        help="where the model's parts live: auto takes the fastest placement the memory plan "
        "fits (flux-nb plan); the others force one (default: %(default)s)",
    )
    group.add_argument(
        "--quantize", action="append", default=None, metavar="PART=LEVEL", help=QUANTIZE_HELP
    )


def _engine_config(args: argparse.Namespace):
    """The --engine options as an EngineConfig (ValueError when they do not fit together)."""
    from .server.engines import EngineConfig

    if args.engine != "flux2-klein":
        if args.memory != "auto" or args.quantize:
            raise ValueError(
                f"the {args.engine} engine takes no --memory, --offload or --quantize: those are "
                "for --engine flux2-klein"
            )
        return EngineConfig(args.engine, model=args.model, device=args.device, dtype=args.dtype)
    from .server.engines._plan import parse_quantize

    return EngineConfig(
        args.engine,
        model=args.model,
        device=args.device,
        dtype=args.dtype,
        memory=args.memory,
        quantize=tuple(parse_quantize(args.quantize).items()),
    )


def _serve(args: argparse.Namespace) -> int:
    from .server._embedded import bind_socket, make_server, url_of
    from .server.engines import EngineError

    problem = _serve_args_problem(args)
    if problem:
        return _fail("serve", problem, 2)
    try:
        app = _serve_app(args)
    except (ValueError, EngineError) as exc:
        return _fail("serve", exc, 2)
    runtime = app.state.flux
    if args.preload:
        print(f"flux-nb serve: loading {runtime.engine_label}...", file=sys.stderr, flush=True)
        try:
            runtime.preload()
        except EngineError as exc:
            runtime.close()
            return _fail("serve", exc, 1)
    try:
        sock = bind_socket(args.host, args.port)
    except OSError as exc:
        runtime.close()
        return _fail("serve", f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", 1)
    tls = args.ssl_certfile is not None
    url = url_of(sock, tls=tls)
    _warn_if_exposed(args.host, runtime.keys.required, tls)
    _log_to_stderr(args.log_level)
    what = (
        "an offline stand-in for the Oxen API"
        if runtime.engine.is_stand_in
        else "the Oxen API in front of FLUX.2 Klein on this machine"
    )
    print(
        f"flux-nb local server on {url}, engine {runtime.engine_label}: {what}. Ctrl+C stops it.",
        flush=True,
    )
    server = make_server(
        app,
        log_level=args.log_level,
        quiet=False,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
    )
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


def _fail(command: str, problem: object, code: int) -> int:
    """Say what went wrong on one stderr line, named by the subcommand; return the exit code."""
    print(f"flux-nb {command}: {problem}", file=sys.stderr)
    return code


def _serve_args_problem(args: argparse.Namespace) -> str:
    """What is wrong with the TLS files or the queue limit, or "" when they can be used."""
    if (args.ssl_certfile is None) != (args.ssl_keyfile is None):
        return "give both --ssl-certfile and --ssl-keyfile for HTTPS."
    if args.ssl_certfile is not None:
        import ssl

        try:  # uvicorn would load them only once serving, with a traceback
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                args.ssl_certfile, args.ssl_keyfile
            )
        except (OSError, ssl.SSLError) as exc:
            reason = exc.strerror or getattr(exc, "reason", None) or exc
            return (
                f"cannot use --ssl-certfile {args.ssl_certfile} with --ssl-keyfile"
                f" {args.ssl_keyfile}: {reason}."
            )
    if args.max_queued_per_key < 1:
        return "--max-queued-per-key must be at least 1."
    return ""


def _serve_app(args: argparse.Namespace) -> Starlette:
    """The server's app from the options; ValueError or EngineError saying which is wrong."""
    from .server._app import Limits, LocalExtras, create_app
    from .server._faults import Faults

    try:
        faults = Faults.from_dict(json.loads(args.faults)) if args.faults is not None else None
    except ValueError as exc:
        raise ValueError(f"--faults: {exc}") from None
    return create_app(
        api_key=args.api_key or os.environ.get(SERVER_KEY_ENV) or None,
        keys_file=args.keys_file,
        allow_private_urls=args.allow_private_urls,
        limits=Limits(max_queued_per_key=args.max_queued_per_key),
        step_delay=args.step_delay,
        engine=_engine_config(args),
        workers=args.workers,
        faults=faults,
        extras=LocalExtras(**{name: getattr(args, name) for name in LOCAL_EXTRAS}),
    )


def _warn_if_exposed(host: str, keyed: bool, tls: bool) -> None:
    """Warn on stderr when the server listens beyond loopback, and louder when keys go in clear."""
    if _is_loopback(host):
        return
    print(
        f"flux-nb serve: warning: listening on {host}, not loopback: anyone who can reach "
        f"this machine can use it{'' if keyed else ' (no API key set)'}.",
        file=sys.stderr,
    )
    if keyed and not tls:
        print(
            "flux-nb serve: warning: keys are accepted over plain HTTP on a network address:"
            " anyone on the path can read them. Add --ssl-certfile and --ssl-keyfile (or put"
            " a TLS proxy in front).",
            file=sys.stderr,
        )


def _log_to_stderr(level: str) -> None:
    """The server's own log lines (who enqueued or cancelled what, refused keys: names, never
    keys) to stderr at the --log-level, beside uvicorn's."""
    import logging

    logger = logging.getLogger("flux_nb.server")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("flux-nb %(levelname)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False


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
        description="Make images from a prompt with the same options as %%flux. Without "
        "OXEN_API_KEY they come from the local offline stand-in (not FLUX).",
    )
    p.add_argument("prompt", nargs="+", help="the text of the image to make")
    for option in for_surface(CLI):  # the same options as %%flux (core/_options.py)
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
    from .core._errors import FluxError
    from .core._recipe import OPTION_PARAMETERS
    from .jobs._sessions import Session

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
        return _fail("generate", exc, 1)
    return 0


def _add_keys(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "keys",
        help="give each person their own key to a shared server (flux-nb serve --keys-file)",
        description="Manage the keys a shared `flux-nb serve --keys-file PATH` accepts. The file "
        "holds names and sha256 hashes, never a key: a new key is printed once, alone on the last "
        "line. The server re-reads the file when it changes, so a removed key is refused at once.",
    )
    p.add_argument("action", choices=("add", "remove", "list"))
    p.add_argument("name", nargs="?", help="the person (add, remove)")
    p.add_argument("--keys-file", required=True, metavar="PATH", help="the keys file")
    p.set_defaults(func=_keys)


def _keys(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .server._keys import KeysFileError, add_key, read_entries, remove_key

    path = Path(args.keys_file)
    if args.action != "list" and not args.name:
        return _fail(f"keys {args.action}", "give the person's NAME.", 2)
    try:
        if args.action == "add":
            key = add_key(path, args.name)
            print(f"Key for {args.name} (shown once; give it to them, it is not stored):")
            print(key, flush=True)
        elif args.action == "remove":
            remove_key(path, args.name)
            print(f"Removed {args.name}'s key: a server using {path} refuses it now.")
        else:
            for entry in read_entries(path):
                print(f"{entry.name}\tsha256:{entry.sha256[:12]}...")
    except KeysFileError as exc:
        return _fail(f"keys {args.action}", exc, 1)
    return 0


def _add_plan(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "plan",
        help="what the flux2-klein engine would do on a machine, before anything is loaded",
        description="The memory plan of the flux2-klein engine: where FLUX.2 Klein's parts go, in "
        "which dtype, how quantized, and the peak GPU memory and RAM at ~1 MP. Without --vram, "
        "--ram or --capability it reads this machine; with them it plans for the machine "
        "described (e.g. a Colab T4: --vram 15 --ram 12.7 --capability 7.5). Sizes come from "
        "the model's configuration; no weights are read or downloaded. Exit code 0 when it "
        "fits, 1 when it does not.",
    )
    p.add_argument("--engine", default="flux2-klein", choices=("flux2-klein",))
    p.add_argument(
        "--model",
        default=None,
        metavar="ID_OR_FOLDER",
        help="a saved pipeline folder or a Hugging Face id (default: FLUX_NB_MODEL, else "
        f"{KLEIN_DEFAULT_MODEL})",
    )
    p.add_argument(
        "--device",
        default="auto",
        metavar="{auto,cuda,mps,cpu}",
        help="auto: this machine's first GPU, else the CPU; cuda:N for another (default: auto)",
    )
    p.add_argument("--vram", type=float, default=None, metavar="GB", help="free GPU memory")
    p.add_argument("--ram", type=float, default=None, metavar="GB", help="free RAM")
    p.add_argument(
        "--capability", default=None, metavar="X.Y", help="CUDA compute capability (T4: 7.5)"
    )
    p.add_argument("--dtype", default="auto", choices=DTYPES)
    _add_memory_options(p)
    p.add_argument("--json", action="store_true", help="one JSON object instead of a line")
    p.set_defaults(func=_plan)


def _plan(args: argparse.Namespace) -> int:
    from .server.engines._machine import parse_capability, read_machine
    from .server.engines._plan import model_sizes, parse_quantize, plan

    try:
        if args.device not in ("auto", "cuda", "mps", "cpu") and not args.device.startswith(
            "cuda:"
        ):
            raise ValueError(f"--device {args.device}: use auto, cuda, cuda:N, mps or cpu")
        for name in ("vram", "ram"):
            if getattr(args, name) is not None and getattr(args, name) < 0:
                raise ValueError(f"--{name} {getattr(args, name)}: give free memory in GB, >= 0")
        machine = read_machine(
            args.device,
            vram_gb=args.vram,
            ram_gb=args.ram,
            capability=parse_capability(args.capability) if args.capability else None,
        )
        if machine.kind == "cuda" and args.vram is None and machine.vram_gb == 0:
            raise ValueError(
                f"{machine.name}: describe the GPU with --vram GB (and --capability X.Y), or "
                "plan for --device cpu"
            )
        decided = plan(
            machine,
            model_sizes(args.model or os.environ.get("FLUX_NB_MODEL", "").strip() or None),
            dtype=args.dtype,
            memory=args.memory,
            quantize=parse_quantize(args.quantize),
        )
    except ValueError as exc:
        return _fail("plan", exc, 2)
    if args.json:
        print(json.dumps(decided.to_json()))
    else:
        print(f"flux-nb plan: {decided.line}")
    return 0 if decided.fits else 1


SUBCOMMANDS = (_add_serve, _add_keys, _add_generate, _add_plan)


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
