"""Install, start and stop the bundled CouchDB-protocol dev server (couchdb/devserver, Node)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

log = logging.getLogger(__name__)

DEVSERVER_DIR: Path = Path(__file__).absolute().parents[2] / "couchdb" / "devserver"
DEVSERVER_DIR_ENV = "PISTON_VM_DEVSERVER_DIR"
# The admin login goes to the child through its environment, not argv (visible in `ps`).
ADMIN_ENV = "DEVSERVER_ADMIN"
_STAMP_NAME = ".piston-vm-install-stamp"
_NPM_CI = ("ci", "--no-audit", "--no-fund")
_STDERR_TAIL_LINES = 200


class DevServerError(Exception):
    """The dev server could not be installed, started or reached."""


def _resolve_dir(devserver_dir: Path | None = None) -> Path:
    if devserver_dir is not None:
        return devserver_dir
    override = os.environ.get(DEVSERVER_DIR_ENV)
    return Path(override) if override else DEVSERVER_DIR


def _which(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise DevServerError(
            f"`{program}` not found on PATH: the bundled CouchDB dev server needs Node.js >= 18 "
            "with npm (or point PISTON_VM_COUCHDB_URL at a real CouchDB)"
        )
    return path


@contextlib.contextmanager
def _install_lock(directory: Path) -> Iterator[None]:
    """Serialize installs of one directory across processes (e.g. parallel test runs)."""
    key = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"piston-vm-devserver-{key}.lock"
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_installed(devserver_dir: Path | None = None) -> None:
    """Run `npm ci --no-audit --no-fund` in the devserver dir when node_modules is missing or older
    than package-lock.json (a stamp file inside node_modules records the lock file it matches).
    Raise DevServerError with a clear message when node/npm are missing or install fails."""
    directory = _resolve_dir(devserver_dir)
    lock_file = directory / "package-lock.json"
    if not lock_file.is_file():
        raise DevServerError(f"{lock_file} is missing: not a devserver directory")
    _which("node")
    stamp = directory / "node_modules" / _STAMP_NAME
    with _install_lock(directory):
        wanted = hashlib.sha256(lock_file.read_bytes()).hexdigest()
        with contextlib.suppress(OSError):
            if stamp.read_text().strip() == wanted:
                return
        npm = _which("npm")
        log.info("installing the CouchDB dev server's npm packages in %s", directory)
        started = time.monotonic()
        try:
            result = subprocess.run(
                [npm, *_NPM_CI], cwd=directory, stdin=subprocess.DEVNULL,
                capture_output=True, text=True, check=False,
            )
        except OSError as exc:
            raise DevServerError(f"could not run npm: {exc}") from exc
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip().splitlines()
            tail = "\n".join(output[-30:])
            raise DevServerError(
                f"`npm {' '.join(_NPM_CI)}` failed in {directory} "
                f"(exit {result.returncode}):\n{tail}"
            )
        stamp.write_text(wanted + "\n")
        log.info("npm packages installed in %.1f s", time.monotonic() - started)


def _server_args(
    directory: Path, *, host: str, port: int, data_dir: Path | None, in_memory: bool
) -> list[str]:
    args = [_which("node"), str(directory / "server.js"), "--host", host, "--port", str(port)]
    if in_memory:
        args.append("--in-memory")
    elif data_dir is not None:
        args += ["--data-dir", str(data_dir)]
    return args


def _child_env(admin: tuple[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop(ADMIN_ENV, None)
    if admin is not None:
        env[ADMIN_ENV] = f"{admin[0]}:{admin[1]}"
    return env


@dataclass
class DevServer:
    """A running dev server child process."""

    url: str
    admin_user: str
    admin_password: str
    process: asyncio.subprocess.Process
    _output_tail: deque[str] = field(
        default_factory=lambda: deque(maxlen=_STDERR_TAIL_LINES), repr=False
    )
    _drainers: list[asyncio.Task[None]] = field(default_factory=list, repr=False)

    @property
    def url_with_credentials(self) -> str:
        parts = urlsplit(self.url)
        login = f"{quote(self.admin_user, safe='')}:{quote(self.admin_password, safe='')}"
        return parts._replace(netloc=f"{login}@{parts.netloc}").geturl()

    @property
    def output_tail(self) -> str:
        """The last lines the child wrote (stderr, and stdout after the ready line)."""
        return "\n".join(self._output_tail)

    async def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM, wait up to timeout_s, then SIGKILL. Safe to call twice."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), timeout_s)
            except TimeoutError:
                log.warning("dev server did not stop within %.1f s: killing it", timeout_s)
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        if self.process.stdin is not None:
            self.process.stdin.close()
        for task in self._drainers:
            task.cancel()
        await asyncio.gather(*self._drainers, return_exceptions=True)
        self._drainers.clear()


async def _drain(stream: asyncio.StreamReader, tail: deque[str]) -> None:
    """Read a child pipe to EOF so the child never blocks on a full pipe."""
    while line := await stream.readline():
        tail.append(line.decode("utf-8", "replace").rstrip())


async def start_devserver(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    data_dir: Path | None = None,
    in_memory: bool = False,
    admin: tuple[str, str] = ("admin", "admin"),
    startup_timeout_s: float = 30.0,
) -> DevServer:
    """ensure_installed(), spawn node server.js, read stdout until the ready JSON line, return.
    data_dir (default var/couchdb) is created if needed. Raise DevServerError (with the child's
    stderr tail) if it exits or times out."""
    directory = _resolve_dir()
    await asyncio.to_thread(ensure_installed, directory)
    if not in_memory:
        data_dir = (data_dir or Path("var/couchdb")).resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
    args = _server_args(directory, host=host, port=port, data_dir=data_dir, in_memory=in_memory)
    # stdin stays an open pipe: --exit-with-stdin makes the child exit when we die.
    process = await asyncio.create_subprocess_exec(
        *args, "--exit-with-stdin", cwd=directory, env=_child_env(admin),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    tail: deque[str] = deque(maxlen=_STDERR_TAIL_LINES)
    server = DevServer("", admin[0], admin[1], process, tail)
    server._drainers.append(asyncio.create_task(_drain(process.stderr, tail)))
    try:
        async with asyncio.timeout(startup_timeout_s):
            server.url = await _read_ready_url(process.stdout, tail)
    except TimeoutError:
        await server.stop(timeout_s=1.0)
        raise DevServerError(
            f"dev server not ready within {startup_timeout_s:.0f} s; output:\n{server.output_tail}"
        ) from None
    except DevServerError as exc:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), 5.0)
        await asyncio.wait(server._drainers, timeout=1.0)
        await server.stop(timeout_s=1.0)
        raise DevServerError(
            f"{exc} (exit code {process.returncode}); output:\n{server.output_tail}"
        ) from None
    except BaseException:
        await server.stop(timeout_s=1.0)
        raise
    server._drainers.append(asyncio.create_task(_drain(process.stdout, tail)))
    log.info("CouchDB dev server ready at %s (%s)", server.url,
             "in memory" if in_memory else f"data in {data_dir}")
    return server


async def _read_ready_url(stdout: asyncio.StreamReader, tail: deque[str]) -> str:
    while True:
        raw = await stdout.readline()
        if not raw:
            raise DevServerError("dev server exited before it was ready")
        line = raw.decode("utf-8", "replace").strip()
        try:
            message = json.loads(line)
        except ValueError:
            message = None
        if isinstance(message, dict) and message.get("ready") is True:
            url = message.get("url")
            if isinstance(url, str) and url.startswith("http"):
                return url
        tail.append(line)


def run_foreground(
    *, host: str, port: int, data_dir: Path, in_memory: bool, admin: tuple[str, str] | None
) -> int:
    """For `piston-vm couchdb ...`: ensure_installed, then run node in the foreground and return
    its exit code (Ctrl-C stops it cleanly)."""
    directory = _resolve_dir()
    ensure_installed(directory)
    if not in_memory:
        data_dir = data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
    args = _server_args(directory, host=host, port=port, data_dir=data_dir, in_memory=in_memory)
    if admin is None:
        log.warning("no --admin given: the dev server accepts every request without login")
    with subprocess.Popen(args, cwd=directory, env=_child_env(admin)) as child:
        # A supervisor's SIGTERM reaches only us: pass it on so node shuts down cleanly.
        previous = signal.signal(signal.SIGTERM, lambda _sig, _frame: child.terminate())
        try:
            return child.wait()
        except KeyboardInterrupt:
            # The terminal sent SIGINT to the whole process group: node is shutting down too.
            try:
                child.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            return 0
        finally:
            signal.signal(signal.SIGTERM, previous)
