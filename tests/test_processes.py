"""One-call worker processes (boltzgen.processes.spawn_call): the result, the error as text, a
death without a word, and the kill that does not wait."""

from __future__ import annotations

import os
import time

from boltzgen.processes import call_result, kill_workers, spawn_call


def _pid_and_sum(*xs: int) -> tuple[int, int]:
    return os.getpid(), sum(xs)


def _fails() -> None:
    raise ValueError("no frame lies in state A")


def _dies() -> None:
    os._exit(3)


def _sleeps() -> None:
    time.sleep(60)


def test_spawn_call_returns_the_result_from_another_process():
    pid, total = call_result(*spawn_call(_pid_and_sum, 1, 2, 3))[1]
    assert total == 6 and pid != os.getpid()


def test_spawn_call_reports_the_error_as_text():
    assert call_result(*spawn_call(_fails)) == ("error", "ValueError: no frame lies in state A")


def test_a_worker_that_dies_without_a_word_is_an_error_with_its_exit_code():
    status, value = call_result(*spawn_call(_dies))
    assert status == "error" and "code 3" in value


def test_kill_workers_does_not_wait_for_a_running_call():
    worker = spawn_call(_sleeps)
    t0 = time.perf_counter()
    kill_workers([worker])
    assert time.perf_counter() - t0 < 10 and not worker[0].is_alive()
