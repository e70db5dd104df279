"""Command line: `cacheproxy run | check-config | schema | demo | demo-upstream`.

Exit codes: 0 clean stop, 1 could not start (e.g. port in use), 2 bad config or usage.

Each command imports what it runs when it runs: `check-config` and `schema` load the config
package, not the server, its admin app, aiohttp's web side or the demo (tests/test_cli.py).
"""

from __future__ import annotations

import argparse
import logging
import resource
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from proxy import __version__, runtime

if TYPE_CHECKING:
    from proxy.config.loader import Settings
    from proxy.server.app import ProxyServer
    from proxy.server.reload import ConfigSource

log = logging.getLogger("cacheproxy")
# LogSettings.level's values (tests/test_cli.py checks they agree), written out so that
# reading the command line imports no settings model.
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

# What `cacheproxy demo` runs when no --config is given: memory only, no Redis.
DEMO_CONFIG = """
listen: {host: 127.0.0.1, port: 8080}
upstream:
  url: http://127.0.0.1:9000
  timeouts: {connect: 5, read: 30}
admin: {host: 127.0.0.1, port: 9901}
cache:
  max_memory: 64MB
compression: {algorithms: [br, gzip]}
cors: {allow_origins: ["http://localhost:3000"]}
routes:
  - name: quotes
    match: {prefix: /api/quotes/, methods: [GET, HEAD]}
    cache: {ttl: 30, stale_while_revalidate: 30, stale_if_error: 300}
  - name: signals
    match: {prefix: /api/signals/, methods: [GET, HEAD]}
    cache:
      ttl: 60
      key: {query: {ignore: [utm_*, _], sort: true}}
"""


def version_line() -> str:
    """`cacheproxy 0.1.0 (Python 3.11.2, aiohttp 3.14.5)`, aiohttp's read from its metadata:
    nothing is imported for it, and only when asked (every command builds the parser)."""
    python, aiohttp = runtime()
    return f"cacheproxy {__version__} (Python {python}, aiohttp {aiohttp})"


class _Version(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> NoReturn:
        print(version_line())  # to stdout, as argparse's own version action
        parser.exit()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cacheproxy", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the proxy from a config file")
    run.add_argument("--config", "-c", default="config.yaml")
    run.add_argument("--port", type=int, help="override listen.port")
    run.add_argument("--upstream", help="override upstream.url")

    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("--config", "-c", default="config.yaml")

    sub.add_parser("schema", help="print the JSON Schema of the config file (for editors)")

    demo = sub.add_parser("demo", help="run a slow sample upstream with the proxy in front")
    demo.add_argument("--config", "-c", help="config file (default: a built-in one)")
    demo.add_argument("--port", type=int, help="proxy port (default 8080)")
    demo.add_argument("--admin-port", type=int, help="admin port (default 9901)")
    demo.add_argument("--upstream-port", type=int, default=9000)
    demo.add_argument("--delay", type=float, default=2.0, help="upstream latency in seconds")

    alone = sub.add_parser("demo-upstream", help="the demo's slow sample API alone (containers)")
    alone.add_argument("--host", default="127.0.0.1")
    alone.add_argument("--port", type=int, default=9000)
    alone.add_argument("--delay", type=float, default=2.0, help="latency in seconds")

    for p in (run, demo):
        p.add_argument(
            "--log-level",
            type=str.upper,
            choices=LOG_LEVELS,
            help=f"override log.level ({', '.join(LOG_LEVELS)})",
        )
    return parser


async def _serve_until_signal(
    config: Settings,
    before: Callable[[], Awaitable[None]] | None = None,
    source: ConfigSource | None = None,
) -> ProxyServer:
    import asyncio

    from proxy.config.loader import redact_urls
    from proxy.server.app import ProxyServer

    loop = asyncio.get_running_loop()
    server = ProxyServer(config, source=source)
    # SIGTERM: /readyz turns 503, the port serves shutdown_delay more; SIGINT: no delay.
    loop.add_signal_handler(signal.SIGTERM, server.shutdown.terminate)
    loop.add_signal_handler(signal.SIGINT, server.shutdown.interrupt)
    loop.add_signal_handler(signal.SIGHUP, server.reload)
    await server.start()
    log.info(
        "cacheproxy %s listening on %s://%s:%d -> %s (admin http://%s:%d)",
        __version__,
        "https" if config.listen.tls is not None else "http",
        config.listen.host,
        server.proxy_port,
        redact_urls(config.upstream.urls),
        config.admin.host,
        server.admin_port,
    )
    if before is not None:
        await before()
    await server.shutdown.requested()
    if not server.shutdown.skips_delay and config.shutdown_delay:
        log.info("not ready: serving %.0fs more before draining", config.shutdown_delay)
    await server.shutdown.until_close()
    log.info("draining in-flight requests (up to %.0fs)", config.shutdown_grace)
    await server.stop()
    return server


def raise_open_files_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit: each client connection holds a descriptor."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("open files limit: cannot raise %d to %d: %s", soft, target, exc)
            return
    now = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    log.info("open files limit: soft %s -> %s, hard %s", _limit(soft), _limit(now), _limit(hard))


def _limit(value: int) -> str:
    return "unlimited" if value == resource.RLIM_INFINITY else str(value)


def cmd_run(args: argparse.Namespace) -> int:
    from proxy.observe.logs import configure_logging
    from proxy.server.eventloop import run as run_loop
    from proxy.server.reload import ConfigSource
    from proxy.server.supervisor import CannotStart, Supervisor

    source = ConfigSource(args.config, port=args.port, upstream=args.upstream)
    config = source.load()
    configure_logging(config.log, args.log_level)
    raise_open_files_limit()
    if config.workers > 1:
        try:
            run_loop(Supervisor(config, source).run())
        except CannotStart as exc:
            return _cannot_start(exc)
    else:
        run_loop(_serve_until_signal(config, source=source))
    return 0


def _cannot_start(exc: Exception) -> int:
    # Typically a port already in use: say which, not a traceback.
    print(f"cacheproxy: cannot start: {exc}", file=sys.stderr)
    return 1


def cmd_check(args: argparse.Namespace) -> int:
    from proxy.config.loader import load_config, redact_urls

    config = load_config(args.config)
    upstream = redact_urls(config.upstream.urls)
    print(f"{args.config}: OK ({len(config.routes)} route(s), upstream {upstream})")
    return 0


def cmd_schema(_: argparse.Namespace) -> int:
    import orjson

    from proxy.config.schema import config_schema

    sys.stdout.buffer.write(orjson.dumps(config_schema(), option=orjson.OPT_INDENT_2) + b"\n")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from aiohttp import web

    from proxy.config.loader import parse_config, with_overrides
    from proxy.demo.upstream import build_demo_app
    from proxy.observe.logs import configure_logging
    from proxy.server.eventloop import run as run_loop
    from proxy.server.reload import ConfigSource

    upstream = f"http://127.0.0.1:{args.upstream_port}"
    source = None
    if args.config:
        source = ConfigSource(args.config, args.port, upstream, args.admin_port)
        config = source.load()
    else:
        config = with_overrides(
            parse_config(DEMO_CONFIG, "demo"),
            port=args.port,
            admin_port=args.admin_port,
            upstream=upstream,
        )
    configure_logging(config.log, args.log_level)
    raise_open_files_limit()
    if config.workers > 1:
        log.info("demo runs one process: workers: %d applies to `cacheproxy run`", config.workers)

    async def main() -> None:
        runner = web.AppRunner(build_demo_app(args.delay), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", args.upstream_port).start()

        async def show() -> None:
            url = f"http://{config.listen.host}:{config.listen.port}"
            admin = f"http://{config.admin.host}:{config.admin.port}"
            timing = r"%{http_code} %header{x-cache} %{time_total}s\n"
            print(
                f"\ndemo upstream (slow, ~{args.delay:g}s) on http://127.0.0.1:{args.upstream_port}"
                f"\nproxy on {url} -- run each twice: a ~{args.delay:g}s MISS, then a HIT\n"
                f"  curl -s -o /dev/null -w '{timing}' {url}/api/quotes/AAPL\n"
                f"  curl -si {url}/api/signals/NVDA?window=5d\n"
                f"  curl -s  {admin}/health\n"
                f"  {admin}/dashboard in a browser (live stats), {admin}/metrics\n"
                f'  curl -s  -X POST {admin}/cache/purge -d \'{{"prefix": "/api/"}}\'\n'
                "Ctrl-C stops both.\n",
                flush=True,
            )

        try:
            await _serve_until_signal(config, show, source)
        finally:
            await runner.cleanup()

    run_loop(main())
    return 0


def cmd_demo_upstream(args: argparse.Namespace) -> int:
    """The demo API on its own, e.g. as the upstream service in docker-compose.yml."""
    from aiohttp import web

    from proxy.demo.upstream import build_demo_app

    web.run_app(build_demo_app(args.delay), host=args.host, port=args.port, access_log=None)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=(getattr(args, "log_level", None) or "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    commands = {
        "run": cmd_run,
        "check-config": cmd_check,
        "schema": cmd_schema,
        "demo": cmd_demo,
        "demo-upstream": cmd_demo_upstream,
    }
    try:
        return commands[args.command](args)
    except OSError as exc:
        return _cannot_start(exc)
    except Exception as exc:
        # Imported here: only the commands that read a config load the config package.
        from proxy.config.loader import ConfigError

        if not isinstance(exc, ConfigError):
            raise
        print(exc.report(), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
