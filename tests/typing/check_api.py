"""What a type checker makes of remotemap's public API (checked by mypy, never run).

Each ``assert_type`` line states the type a call gives. Each line marked
``# type: ignore[CODE]`` must be refused with that code: mypy runs with ``warn_unused_ignores``
(strict), so a bad call that stops being refused fails the check, and
``tests/test_typed_api.py`` strips the markers and checks each such line is still refused
with its code.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator

from typing_extensions import assert_type

from remotemap import Executor, Mode, ModeName, remote_imap, remote_map


def square(x: int) -> int:
    return x * x


def label(x: int, *, prefix: str = "") -> str:
    return f"{prefix}{x}"


def accepted_calls(pool: concurrent.futures.Executor) -> None:
    assert_type(remote_map(square, [(1,), (2,)]), list[int])
    assert_type(remote_map(label, [(1,)], [{"prefix": "n"}], "serial"), list[str])
    assert_type(remote_map(square, [(1,)], mode="local", n_jobs=2, timeout=5.0, retries=1,
                           backoff=0.1, on_error="stop", progress=False), list[int])
    assert_type(remote_map(square, [(1,)], mode="ssh", hosts=["a", "b"], port=22,
                           host_key_policy="accept-new", run_dir="runs/x"), list[int])
    assert_type(remote_map(square, [(1,)], mode="cluster", scheduler="slurm",
                           walltime="1:00:00", function_changed="rerun"), list[int])
    # n_jobs=None: the configured value, as in joblib.
    assert_type(remote_map(square, [(1,)], mode="local", n_jobs=None), list[int])
    mode: Mode = "local_with_dumps"
    assert_type(remote_map(square, [(1,)], mode=mode, keep_files=True), list[int])
    # A plug-in's mode (or a name read at run time) takes any option, checked at run time.
    assert_type(remote_map(square, [(1,)], mode=ModeName("threads"), workers=2), list[int])
    assert_type(remote_map(square, [(1,)], None, ModeName("threads")), list[int])
    assert_type(remote_map(square, [(1,)], executor=pool, retries=2), list[int])
    assert_type(remote_imap(square, [(1,)]), Iterator[tuple[int, int]])
    assert_type(remote_imap(square, [(1,)], executor=pool), Iterator[tuple[int, int]])
    assert_type(remote_imap(label, [(1,)], mode=ModeName("threads")), Iterator[tuple[int, str]])


def accepted_executors(pool: concurrent.futures.Executor) -> None:
    assert_type(Executor("local", n_jobs=None), Executor)
    with Executor("local", n_jobs=2, retries=1) as ex:
        assert_type(ex, Executor)
        assert_type(ex.submit(square, 2), concurrent.futures.Future[int])
        assert_type(ex.submit(label, 2, prefix="n"), concurrent.futures.Future[str])
        assert_type(ex.map(square, [1, 2]), Iterator[int])
    assert_type(Executor(ModeName("threads"), workers=2), Executor)
    assert_type(Executor(executor=pool, timeout=1.0), Executor)
    assert_type(Executor(), Executor)


def accepted_optional_executor(maybe: concurrent.futures.Executor | None) -> None:
    # None runs on the config's mode: an optional executor needs no branch at the call.
    assert_type(remote_map(square, [(1,)], executor=maybe), list[int])
    assert_type(Executor(executor=maybe), Executor)


def refused_calls(pool: concurrent.futures.Executor, name: str) -> None:
    remote_map(square, [(1,)], mode="lcoal")  # type: ignore[call-overload]
    remote_map(square, [(1,)], mode="local", n_jobs="four")  # type: ignore[call-overload]
    remote_map(square, [(1,)], n_job=4)  # type: ignore[call-overload]
    remote_map(square, [(1,)], on_error="ignore")  # type: ignore[call-overload]
    remote_map(square, [(1,)], timeout="5")  # type: ignore[call-overload]
    remote_map(square, [(1,)], mode="ssh", hosts="a,b")  # type: ignore[call-overload]
    remote_map(square, [(1,)], function_changed="yes")  # type: ignore[call-overload]
    remote_map(square, [(1,)], mode=name)  # type: ignore[call-overload]
    remote_map(square, [(1,)], mode="local", executor=pool)  # type: ignore[call-overload]
    remote_map(square, [(1,)], executor=pool, n_jobs=2)  # type: ignore[call-overload]
    remote_map(square, [(1,)], executor="local")  # type: ignore[call-overload]
    remote_imap(square, [(1,)], mode="lcoal")  # type: ignore[call-overload]
    text: str = remote_map(square, [(1,)])[0]  # type: ignore[assignment]
    del text


def refused_executors(pool: concurrent.futures.Executor) -> None:
    Executor("lcoal")  # type: ignore[call-overload]
    Executor("local", n_jobs="four")  # type: ignore[call-overload]
    Executor("local", chunksize=None)  # type: ignore[call-overload]
    Executor("local", executor=pool)  # type: ignore[call-overload]
    Executor(executor=pool, n_jobs=2)  # type: ignore[call-overload]
    with Executor("serial") as ex:
        ex.submit(square, "2")  # type: ignore[arg-type]
        ex.submit(square)  # type: ignore[call-arg]
        ex.submit(label, 1, prefx="n")  # type: ignore[call-arg]
        wrong: Iterator[str] = ex.map(square, [1])  # type: ignore[arg-type]
        del wrong
