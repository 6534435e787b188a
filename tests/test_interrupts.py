"""Ctrl-C during start-up is recorded, not raised inside library imports (metalm.interrupts)."""

import os
import signal

import pytest

from metalm import interrupts


@pytest.fixture(autouse=True)
def python_default_sigint():
    """Python's own Ctrl-C handler, as at a terminal, even when the suite runs with SIGINT ignored
    (started in the background with `&`); the previous disposition is restored after each test."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_a_ctrl_c_while_deferred_is_raised_at_resume_and_a_second_at_once():
    interrupts.defer()
    try:
        os.kill(os.getpid(), signal.SIGINT)  # recorded: nothing raised here
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # the second one means it
    finally:
        with pytest.raises(KeyboardInterrupt):
            interrupts.resume()  # the first one, answered at the end of start-up
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    interrupts.resume()  # nothing pending: no interrupt


def test_resume_without_a_ctrl_c_raises_nothing_and_restores_the_default():
    interrupts.defer()
    interrupts.resume()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_host_programs_own_handler_is_left_alone():
    def own(signum, frame):
        pass

    previous = signal.signal(signal.SIGINT, own)
    try:
        interrupts.defer()
        assert signal.getsignal(signal.SIGINT) is own
        interrupts.resume()
        assert signal.getsignal(signal.SIGINT) is own
    finally:
        signal.signal(signal.SIGINT, previous)



def test_handled_clears_the_flag_cpython_sets_when_an_interrupt_leaves_exec():
    """CPython 3.11 flags such an interrupt as unhandled (even when caught) and may then end the
    process by SIGINT instead of metalm's exit status 130; handled() clears the flag."""
    import ctypes

    try:
        flag = ctypes.c_int.in_dll(ctypes.pythonapi, "_Py_UnhandledKeyboardInterrupt")
    except (AttributeError, ValueError):
        pytest.skip("this Python does not export _Py_UnhandledKeyboardInterrupt (nothing to clear)")
    try:
        exec("raise KeyboardInterrupt")
    except KeyboardInterrupt:
        assert flag.value == 1
        interrupts.handled()
    assert flag.value == 0
