"""The service under test as a separate `piston-vm serve` process on loopback: start, wait, stop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import aiohttp

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
HEALTH_POLL_S = 0.01
STOP_TIMEOUT_S = 10.0
# Variables that would point the child somewhere else than the bench decides.
_CLEARED_ENV = ("PISTON_VM_COUCHDB_URL", "PISTON_VM_HOST", "PISTON_VM_PORT", "PISTON_VM_DATA_DIR")


class BenchError(RuntimeError):
    """The benchmark could not do what it measures (a failed request, a dead process)."""


def free_port() -> int:
    """A loopback port that was free a moment ago (the child binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def piston_vm_command() -> list[str]:
    """The installed `piston-vm` script of this interpreter's environment (same pid as Python)."""
    script = Path(sys.executable).with_name("piston-vm")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "piston_vm"]


def _default_sigint() -> None:
    # A shell that runs us in the background ignores SIGINT, and children inherit that; the
    # CLI shuts down cleanly (stopping a bundled server it started) only on KeyboardInterrupt.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This environment without the service's location settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in _CLEARED_ENV}
    env.update(extra)
    return env


@dataclass
class Service:
    """A running `piston-vm serve` child."""

    process: asyncio.subprocess.Process
    url: str
    log_path: Path
    _log_file: IO[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


async def start_service(
    *,
    port: int,
    log_path: Path,
    env: Mapping[str, str],
    couchdb_url: str | None = None,
    couchdb_port: int | None = None,
    data_dir: Path | None = None,
    timeout_s: float = 90.0,
) -> tuple[Service, float]:
    """Spawn `piston-vm serve`; return it and the seconds from spawn to the first 200 /readyz."""
    args = [*piston_vm_command(), "serve", "--host", HOST, "--port", str(port)]
    env = dict(env)
    if couchdb_url is not None:
        # Through the environment, not argv: the URL carries the login (visible in `ps`).
        env["PISTON_VM_COUCHDB_URL"] = couchdb_url
    if couchdb_port is not None:
        args += ["--couchdb-port", str(couchdb_port)]
    if data_dir is not None:
        args += ["--data-dir", str(data_dir)]
    log_file = log_path.open("ab")
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        *args, stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=log_file,
        env=child_env(env), preexec_fn=_default_sigint,
    )
    service = Service(process, f"http://{HOST}:{port}", log_path, log_file)
    try:
        await _wait_healthy(service, started + timeout_s)
    except BaseException:
        await stop_service(service)
        raise
    return service, time.perf_counter() - started


async def _wait_healthy(service: Service, deadline: float) -> None:
    timeout = aiohttp.ClientTimeout(total=2.0)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            if service.process.returncode is not None:
                raise BenchError(
                    f"piston-vm serve exited with {service.process.returncode}:\n"
                    f"{service.log_tail()}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(service.url + "/readyz") as resp:
                    await resp.read()
                    if resp.status == 200:
                        return
            if time.perf_counter() > deadline:
                raise BenchError(f"piston-vm serve not ready in time:\n{service.log_tail()}")
            await asyncio.sleep(HEALTH_POLL_S)


async def stop_service(service: Service) -> None:
    """SIGINT (the CLI's clean shutdown, which also stops a bundled server it started), then
    SIGKILL if it lingers."""
    process = service.process
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            log.warning("piston-vm serve (pid %d) ignored SIGINT: killing it", process.pid)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    service._log_file.close()


async def run_cli(args: list[str], env: Mapping[str, str]) -> str:
    """Run a `piston-vm` subcommand to completion and return its stdout."""
    process = await asyncio.create_subprocess_exec(
        *piston_vm_command(), *args, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=child_env(env),
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise BenchError(
            f"piston-vm {args[0]} failed ({process.returncode}): {err.decode()[-2000:]}")
    return out.decode()


async def create_account(
    couchdb_url: str, name: str, realm: str, env: Mapping[str, str]
) -> tuple[str, str]:
    """`piston-vm accounts create`: (account id, api key)."""
    out = await run_cli(
        ["accounts", "create", "--name", name, "--realm", realm],
        {**env, "PISTON_VM_COUCHDB_URL": couchdb_url},
    )
    result = json.loads(out.strip().splitlines()[-1])
    return str(result["account_id"]), str(result["api_key"])
