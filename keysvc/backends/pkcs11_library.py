"""Loading a PKCS#11 module once per process, initialised for use from several threads.

A PKCS#11 module may be initialised only once per process, and every backend on it shares that
state (including the login), so modules are reference-counted here: the first user loads and
initialises, the last one finalises (which also lets a later user see a changed configuration,
such as a new SoftHSM token directory).

python-pkcs11 calls `C_Initialize(NULL)`, which by the specification promises that the
application will not call the module from several threads at once; SoftHSM2, for one, then
disables its internal locks. keysvc does call it from several threads (one per pooled session,
the library releasing the GIL in every call), so right after loading it re-initialises the module
with `CKF_OS_LOCKING_OK` through the module's own function list. A module that cannot lock
(`CKR_CANT_LOCK`) is initialised as before and every call to it is serialised instead.

A token that vanished (an HSM client restarted, a SoftHSM token directory briefly gone) can
leave the module unable to find it again until it is initialised afresh: `reinitialise` does
that, at most every REINITIALISE_INTERVAL seconds, for a backend whose login keeps failing.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pkcs11

from keysvc.errors import ConfigError

log = logging.getLogger(__name__)

CKR_OK = 0x0
CKF_OS_LOCKING_OK = 0x2
REINITIALISE_INTERVAL = 2.0
"""Seconds between two re-initialisations of one module (each one drops every session)."""

_CK_RV = ctypes.c_ulong
_InitFunction = ctypes.CFUNCTYPE(_CK_RV, ctypes.c_void_p)


class _InitializeArgs(ctypes.Structure):
    """CK_C_INITIALIZE_ARGS."""

    _fields_ = [
        ("CreateMutex", ctypes.c_void_p),
        ("DestroyMutex", ctypes.c_void_p),
        ("LockMutex", ctypes.c_void_p),
        ("UnlockMutex", ctypes.c_void_p),
        ("flags", ctypes.c_ulong),
        ("pReserved", ctypes.c_void_p),
    ]


class _SessionInfo(ctypes.Structure):
    """CK_SESSION_INFO."""

    _fields_ = [
        ("slotID", ctypes.c_ulong),
        ("state", ctypes.c_ulong),
        ("flags", ctypes.c_ulong),
        ("ulDeviceError", ctypes.c_ulong),
    ]


_GetSessionInfo = ctypes.CFUNCTYPE(_CK_RV, ctypes.c_ulong, ctypes.POINTER(_SessionInfo))


class _FunctionListHead(ctypes.Structure):
    """CK_FUNCTION_LIST up to C_GetSessionInfo, in the specification's order."""

    _fields_ = [
        ("major", ctypes.c_ubyte),
        ("minor", ctypes.c_ubyte),
        ("C_Initialize", _InitFunction),
        ("C_Finalize", _InitFunction),
        *(
            (name, ctypes.c_void_p)
            for name in (
                "C_GetInfo",
                "C_GetFunctionList",
                "C_GetSlotList",
                "C_GetSlotInfo",
                "C_GetTokenInfo",
                "C_GetMechanismList",
                "C_GetMechanismInfo",
                "C_InitToken",
                "C_InitPIN",
                "C_SetPIN",
                "C_OpenSession",
                "C_CloseSession",
                "C_CloseAllSessions",
            )
        ),
        ("C_GetSessionInfo", _GetSessionInfo),
    ]


CKS_RO_USER_FUNCTIONS = 1
CKS_RW_USER_FUNCTIONS = 3


def _function_list(path: str) -> _FunctionListHead | None:
    module = ctypes.CDLL(path)  # the same handle python-pkcs11 holds: dlopen counts references
    get_function_list = module.C_GetFunctionList
    get_function_list.restype = _CK_RV
    get_function_list.argtypes = [ctypes.POINTER(ctypes.POINTER(_FunctionListHead))]
    functions = ctypes.POINTER(_FunctionListHead)()
    if get_function_list(ctypes.byref(functions)) != CKR_OK:
        return None
    return functions.contents


def _reinitialise_with_os_locking(path: str, head: _FunctionListHead) -> bool:
    """Finalise the freshly loaded module and initialise it again with CKF_OS_LOCKING_OK.

    Returns False (with the module initialised as python-pkcs11 left it) when the module
    refuses to lock."""
    if head.C_Finalize(None) != CKR_OK:
        return False
    args = _InitializeArgs(flags=CKF_OS_LOCKING_OK)
    if head.C_Initialize(ctypes.addressof(args)) == CKR_OK:
        return True
    rv = head.C_Initialize(None)
    if rv != CKR_OK:
        raise ConfigError(f"PKCS#11 module {path} failed to initialise again (CKR 0x{rv:x})")
    return False


def describe_error(exc: BaseException) -> str:
    """A PKCS#11 error for a message: its class name (CKR_* in words) plus python-pkcs11's text,
    which names attributes or a dlopen problem, never a PIN (that is never passed to it)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass
class LoadedModule:
    """A PKCS#11 module shared by every backend that names the same path."""

    path: str
    lib: Any
    functions: _FunctionListHead = field(repr=False)
    thread_safe: bool
    users: int = 0
    reinitialised_at: float = field(default_factory=time.monotonic)
    _serial: Any = field(default_factory=threading.RLock, repr=False)

    def logged_in(self, session: Any) -> bool:
        """Whether `session` (a python-pkcs11 Session) is in a user-logged-in state. A login
        lost to an HSM restart does not fail searches: they just stop finding private keys, which
        must not be taken for "the token holds no keys"."""
        info = _SessionInfo()
        with self.calls():
            rv = self.functions.C_GetSessionInfo(session.handle, ctypes.byref(info))
        return rv == CKR_OK and info.state in (CKS_RO_USER_FUNCTIONS, CKS_RW_USER_FUNCTIONS)

    @contextlib.contextmanager
    def calls(self) -> Iterator[None]:
        """Hold around every call into the module: a no-op unless the module cannot lock."""
        if self.thread_safe:
            yield
        else:
            with self._serial:
                yield


_modules: dict[str, LoadedModule] = {}
_modules_lock = threading.Lock()


def acquire_module(path: Path) -> LoadedModule:
    """Load (first user) or share (later users) the module at `path`."""
    key = str(path)
    with _modules_lock:
        loaded = _modules.get(key)
        if loaded is None:
            if not path.is_file():
                raise ConfigError(f"PKCS#11 module {path} does not exist")
            try:
                lib = pkcs11.lib(key)
            except pkcs11.PKCS11Error as exc:
                raise ConfigError(
                    f"PKCS#11 module {path} cannot be loaded: {describe_error(exc)}"
                ) from None
            functions = _function_list(key)
            if functions is None:
                raise ConfigError(f"PKCS#11 module {path} returned no function list")
            thread_safe = _reinitialise_with_os_locking(key, functions)
            if not thread_safe:
                log.warning(
                    "PKCS#11 module %s cannot use OS locking: its calls are serialised", path
                )
            loaded = LoadedModule(key, lib, functions, thread_safe)
            _modules[key] = loaded
        loaded.users += 1
        return loaded


def release_module(loaded: LoadedModule) -> None:
    """Drop one user; the last one finalises the module (closing any session left open)."""
    with _modules_lock:
        loaded.users -= 1
        if loaded.users > 0 or _modules.get(loaded.path) is not loaded:
            return
        del _modules[loaded.path]
        with contextlib.suppress(pkcs11.PKCS11Error):
            loaded.lib.finalize()


def reinitialise(loaded: LoadedModule) -> bool:
    """Finalise and initialise the module again, so that a token that vanished and came back
    is found (every session of every backend on the module is dropped: they reconnect). Done at
    most every REINITIALISE_INTERVAL seconds; returns whether it was done now."""
    with _modules_lock, loaded.calls():
        if time.monotonic() - loaded.reinitialised_at < REINITIALISE_INTERVAL:
            return False
        loaded.reinitialised_at = time.monotonic()
        loaded.thread_safe = _reinitialise_with_os_locking(loaded.path, loaded.functions)
    log.info("PKCS#11 module %s initialised again to find its token", loaded.path)
    return True
