"""Environment variable names are checked once, the same way, on every mode."""

from __future__ import annotations

import pytest

from remotemap.tasks import check_env
from tests.backends import Runner
from tests.taskfuncs import read_env

BAD = [
    ({"A=B": "x"}, "invalid environment variable name 'A=B'"),
    ({"": "x"}, "name must not be empty"),
    ({"A\0B": "x"}, "invalid environment variable name 'A\\x00B'"),
    ({"GOOD": "x\0y"}, "env['GOOD']: the value must contain no NUL"),
]


@pytest.mark.parametrize(("env", "message"), BAD)
def test_every_mode_refuses_bad_names_before_running(
    runner: Runner, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError) as mapped:
        runner.map(read_env, [("A",)], env=env)
    assert message in str(mapped.value)
    with pytest.raises(ValueError) as imapped:
        list(runner.imap(read_env, [("A",)], env=env))
    assert message in str(imapped.value)
    with pytest.raises(ValueError) as executor:
        runner.executor(env=env)
    assert message in str(executor.value)


def test_valid_names_pass() -> None:
    check_env({"A_B": "x=y", "lower": "", "X1": "ünïcode"})
