"""The stand-ins for ``ssl`` and ``hmac`` (``orchestrator._lazy_imports``).

Each check runs in a fresh interpreter, since the point is what a process
has imported: importing the package and trio maps no OpenSSL, and the first
use of either module gives the real thing, to trio's references as well.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_importing_the_daemon_and_trio_loads_no_openssl() -> None:
    out = run("""
        import sys
        import orchestrator, orchestrator._cli, orchestrator._app, trio
        maps = open("/proc/self/maps").read()
        print(sorted(m for m in ("_ssl", "_hashlib", "hashlib", "secrets") if m in sys.modules))
        print("libcrypto" in maps, "libssl" in maps)
        print(type(sys.modules["ssl"]).__name__, type(sys.modules["hmac"]).__name__)
    """)
    assert out.splitlines() == ["[]", "False False", "_StandIn _StandIn"]


def test_first_use_gives_the_real_modules_to_every_holder() -> None:
    out = run("""
        import sys
        import orchestrator, trio, trio._ssl, trio._dtls
        import ssl
        from ssl import SSLContext, PROTOCOL_TLS_CLIENT
        context = ssl.create_default_context()
        print(isinstance(context, SSLContext), context.protocol == PROTOCOL_TLS_CLIENT)
        real = sys.modules["ssl"]
        print(type(real).__name__, real.SSLContext is trio._ssl._stdlib_ssl.SSLContext)
        print(trio._ssl._is_eof(real.SSLEOFError()))
        import hmac
        print(hmac.new(b"k", b"m", "sha256").hexdigest()[:8],
              trio._dtls.hmac.compare_digest(b"a", b"a"))
        print("_ssl" in sys.modules, "_hashlib" in sys.modules)
    """)
    import hmac

    assert out.splitlines() == [
        "True True",
        "module True",
        "True",
        f"{hmac.new(b'k', b'm', 'sha256').hexdigest()[:8]} True",
        "True True",
    ]


def test_a_module_imported_before_the_package_is_left_alone() -> None:
    out = run("""
        import sys, ssl
        real = ssl
        import orchestrator
        print(sys.modules["ssl"] is real, type(sys.modules["hmac"]).__name__)
    """)
    assert out.splitlines() == ["True _StandIn"]
