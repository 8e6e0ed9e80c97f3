"""glibc malloc tuning for batched inference: large mmap/trim thresholds stop per-batch page-fault storms.

GLIBC_TUNABLES is read only at process start, so `ensure_tuned_malloc` re-executes the process once (a marker
variable holding the process id stops a second re-exec where the environment strips GLIBC_TUNABLES).
"""
from __future__ import annotations

import os
import sys

MMAP_THRESHOLD = 1_073_741_824
TRIM_THRESHOLD = 4_294_967_296
TUNABLES = {
    "glibc.malloc.mmap_threshold": str(MMAP_THRESHOLD),
    "glibc.malloc.trim_threshold": str(TRIM_THRESHOLD),
}
OPT_OUT_ENV = "VISIONDB_NO_MALLOC_TUNING"
REEXEC_ENV = "VISIONDB_MALLOC_REEXEC"
"""Set to the process id just before the re-exec (execv keeps the pid; child processes have their own)."""


def _parse(value: str) -> dict[str, str]:
    """GLIBC_TUNABLES 'a=1:b=2' -> {'a': '1', 'b': '2'}."""
    pairs = (item.split("=", 1) for item in value.split(":") if "=" in item)
    return {name: setting for name, setting in pairs}


def tuned_env_value(current: str | None) -> str:
    """GLIBC_TUNABLES value with our thresholds added, keeping any other tunables already set."""
    merged = _parse(current or "")
    for name, setting in TUNABLES.items():
        merged.setdefault(name, setting)
    return ":".join(f"{name}={setting}" for name, setting in merged.items())


def malloc_is_tuned(env: dict[str, str] | os._Environ[str] | None = None) -> bool:
    """True when GLIBC_TUNABLES already sets both thresholds."""
    current = _parse((env if env is not None else os.environ).get("GLIBC_TUNABLES", ""))
    return all(name in current for name in TUNABLES)


def ensure_tuned_malloc(argv: list[str] | None = None) -> None:
    """Re-exec the current command with tuned GLIBC_TUNABLES unless already set or VISIONDB_NO_MALLOC_TUNING is set.

    Call first thing in CLI/server entry points (before torch is imported); returns normally when no re-exec is needed.
    """
    if os.environ.get(OPT_OUT_ENV) or malloc_is_tuned() or not sys.platform.startswith("linux"):
        return
    if os.environ.get(REEXEC_ENV) == str(os.getpid()):
        return  # this process is the re-exec and GLIBC_TUNABLES did not survive it: never loop
    os.environ["GLIBC_TUNABLES"] = tuned_env_value(os.environ.get("GLIBC_TUNABLES"))
    if argv is None or list(argv) == sys.argv:
        # The interpreter's own command line keeps `-m module` / `-c code` intact.
        command = [sys.executable, *sys.orig_argv[1:]]
    else:
        command = [sys.executable, *argv]
    if len(command) < 2 or (sys.argv and sys.argv[0] == ""):
        return  # interactive interpreter: nothing to re-exec; child processes inherit the setting
    os.environ[REEXEC_ENV] = str(os.getpid())
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, command)


def malloc_settings() -> dict[str, object]:
    """What allocator tuning is in effect in this process (for benchmark reports)."""
    current = _parse(os.environ.get("GLIBC_TUNABLES", ""))
    return {
        "GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES", ""),
        "tuned": malloc_is_tuned(),
        "mmap_threshold": current.get("glibc.malloc.mmap_threshold"),
        "trim_threshold": current.get("glibc.malloc.trim_threshold"),
        "opted_out": bool(os.environ.get(OPT_OUT_ENV)),
    }
