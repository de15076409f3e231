"""The `counterpoint` command: serve (gateway + workers), worker, gateway."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import sys
import threading

from counterpoint.clients import cli as client_cli

from .config import Settings, load_settings

log = logging.getLogger("counterpoint")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML file with settings (options and COUNTERPOINT_* variables win)")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on")
    p.add_argument("--api-key", dest="api_key", help="require this bearer key on /v1 requests")
    p.add_argument("--api-key-file", dest="api_key_file", help="file of accepted bearer keys, one per line")
    p.add_argument("--internal-token", dest="internal_token",
                   help="shared gateway/worker secret (or COUNTERPOINT_INTERNAL_TOKEN); needed off loopback")
    p.add_argument("--max-waiting", dest="max_waiting", type=int, help="requests a worker queues before 429")
    p.add_argument("--request-deadline", dest="request_deadline", type=float, help="seconds a request may take")
    p.add_argument("--shutdown-grace", dest="shutdown_grace", type=float,
                   help="SIGTERM: seconds to finish in-flight requests (default 30)")


def _model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="Hugging Face folder, .gguf file, or alias (default: smollm2, embedded)")
    p.add_argument("--amateur", help="a second, smaller model for contrastive decoding")
    p.add_argument("--served-model-name", dest="served_model_name", help="model id clients use")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="weights and KV cache dtype")
    p.add_argument("--device", help="torch device (default cpu)")
    p.add_argument("--kv-cache-gb", dest="kv_cache_gb", type=float, help="KV cache memory per worker")
    p.add_argument("--max-model-len", dest="max_model_len", type=int, help="context length")
    p.add_argument("--threads", type=int, help="torch threads per worker")
    from .worker.backend import BACKEND_FEATURES, methods_for
    runs = "; ".join(f"{name} runs {', '.join(methods_for(f))}" for name, f in BACKEND_FEATURES.items())
    p.add_argument("--backend", choices=sorted(BACKEND_FEATURES),
                   help=f"worker engine (default torch; vllm needs the vllm extra). {runs}")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="counterpoint", description="OpenAI-compatible server with "
                                 "hallucination-mitigating contrastive decoding")
    sub = ap.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start the gateway and its workers on this machine")
    _common(serve)
    _model(serve)
    serve.add_argument("--workers", type=int, help="worker processes (default 1)")
    serve.add_argument("--worker-port", dest="worker_port", type=int, help="first worker port (default 8100)")
    worker = sub.add_parser("worker", help="start one worker (engine process) only")
    _common(worker)
    _model(worker)
    gateway = sub.add_parser("gateway", help="start the gateway only, in front of running workers")
    _common(gateway)
    gateway.add_argument("--worker", dest="worker_urls", action="append", help="worker URL (repeatable)")
    gateway.add_argument("--worker-dns", dest="worker_dns", action="append",
                         help="NAME:PORT whose DNS records list the workers, re-resolved periodically (repeatable)")
    client_cli.register(sub)  # commands that talk to a running server: they set `func`
    return ap


def main(argv: list[str] | None = None) -> None:
    ns = parser().parse_args(argv)
    if getattr(ns, "func", None) is not None:
        raise SystemExit(ns.func(ns))
    args = vars(ns)
    command, config = args.pop("command"), args.pop("config")
    settings = load_settings(config, **args)
    if command == "worker" and args.get("port") is None:
        settings.port = settings.worker_port
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # uvicorn drains on SIGTERM, then raises the signal again: end with cleanup (`finally`) and status 0
    signal.signal(signal.SIGTERM, _exit_cleanly)
    if command == "serve":
        from .serve import serve
        serve(settings)
    elif command == "worker":
        run_worker(settings)
    else:
        run_gateway(settings)


def _exit_cleanly(signum, frame) -> None:
    raise SystemExit(0)


def run_worker(settings: Settings) -> None:
    import torch
    import uvicorn

    from .worker.factory import build_worker_app
    if not is_loopback(settings.host) and not settings.internal_token:
        sys.exit("counterpoint worker: listening beyond loopback needs --internal-token "
                 "(or COUNTERPOINT_INTERNAL_TOKEN), shared with the gateway")
    torch.set_num_threads(1)  # the front never runs the model; its engine core process does (worker/core.py)
    app = build_worker_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning",
                                           timeout_graceful_shutdown=settings.shutdown_grace))
    core = app.state.worker.core

    def exit_with_core() -> None:  # a worker whose engine died is restarted by its supervisor, not kept
        core.process.join()
        if not server.should_exit:
            log.error("the engine core exited (code %s); stopping the worker", core.process.exitcode)
            os._exit(1)

    threading.Thread(target=exit_with_core, daemon=True).start()
    server.run()


def run_gateway(settings: Settings) -> None:
    import uvicorn

    from .gateway.app import create_app
    if not settings.worker_urls and not settings.worker_dns:
        sys.exit("counterpoint gateway: give at least one --worker URL or --worker-dns NAME:PORT")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning",
                timeout_graceful_shutdown=settings.shutdown_grace)


def is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


if __name__ == "__main__":
    main()
