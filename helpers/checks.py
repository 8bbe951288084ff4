"""Graded "Your turn" cells: each check compares a student's function with the workbook's.

A check runs the student's function and the workbook's on the same inputs, random ones and
edge cases, and compares shapes, kinds of number, values and, for losses, gradients. It
prints one line and returns True or False; whatever the answer does, the check returns, so a
notebook runs on whatever the student wrote::

    ok = checks.check_haversine(haversine)
    distance = haversine if ok else geo.haversine_km

Checks, by notebook (:data:`GRADED` maps each to its notebook and the student's function): 02
:func:`check_split_rule`; 04 :func:`check_haversine`; 05 :func:`check_attention`,
:func:`check_encoder_block`; 06 :func:`check_training`; 07 :func:`check_eq1_loss`,
:func:`check_eq3_loss`, :func:`check_smoothed_targets`; 09 :func:`check_rollout`. Worked
answers are in ``solutions/`` ("Your turn" sections).

How a check runs an answer:

- **Cases from simple to hard.** The smallest, cleanest input comes first, so an order or axis
  mistake is named on an input small enough to reason about. A failure names the case, says
  what differs (shape, kind of number, value, with the index) and adds a hint naming the
  likely mistake ("halves swapped?", "rows do not sum to 1: softmax over the wrong axis?").
- **Own copies.** Every call, the student's and the workbook's, gets its own deep copy of the
  inputs: an answer that changes its arguments in place (``q /= sqrt(d)``) is judged on what
  it returns, and cannot change what the workbook's function sees; where such an answer
  fails, the hint says that it changed its arguments. The workbook's function runs first on
  each case (its time sets the limit below); :func:`check_training` keeps its results.
- **Not written yet, or a missing return.** A function whose body is only a docstring and
  ``...`` (or ``pass``) is "not written yet" and is not run; one with code that returns None
  is told it may miss its ``return``.
- **Nothing escapes.** Whatever the answer raises, ``SystemExit`` (``sys.exit()``) and
  ``KeyboardInterrupt`` included, is reported as that case's failure, by the exception's type
  name where its message cannot be read. One exception: a real Ctrl-C (Jupyter's interrupt
  button) while a check runs stops the cell as everywhere else, so that "Run all" can still
  be stopped; the check tells the two apart by its own SIGINT handler (main thread only).
- **A time limit per case**, named in the line when it strikes: :data:`SECONDS_PER_CASE`
  (:data:`TRAINING_SECONDS_PER_CASE` for :func:`check_training`), or 20 times the workbook's
  own time on the case where that is longer (a slow machine), up to ten times the limit. In
  the main thread on Linux and macOS (a Jupyter or Colab kernel) a ``SIGALRM`` timer
  (``signal.setitimer``) raises into the answer; elsewhere (Windows, or a check called from
  another thread) a watchdog thread raises the same exception into the answer's thread
  (CPython's ``PyThreadState_SetAsyncExc``). Both stop Python code, such as an endless loop,
  at its next step, and an answer that swallows the exception with a bare ``except:`` in a
  loop is stopped at the next line it runs; neither cuts one long call into compiled code (a
  huge matrix product) short, and the watchdog does not cut a ``time.sleep`` short.
- **Shapes before values, without copying.** The answer's ``.shape`` is compared with the
  expected one before anything is converted, so a huge broadcast view (``np.broadcast_to``)
  is refused by its size, not copied. Kinds of number are compared by class: floating point
  where the workbook returns floats (float32 or float64 alike: a float64 NumPy answer to a
  float32 question is right), integers where it returns integers.
- **Rounding is allowed for.** Where the inputs are float32, the workbook's function also
  runs on float64 copies, and the answer is compared with that more exact result. The room
  for rounding is 8 times the larger of the float32 result's distance from it and the
  distance a nudge of the inputs by a float32 rounding makes (large logits: more room), so a
  float32 answer that takes its steps in another order passes too.

Every check takes keyword-only ``hidden`` (also run extra cases, other seeds, shapes and edge
cases, that the notebook does not show; a failure there says "hidden case 2" and shows no
inputs, indices or values), ``quiet`` (print nothing) and ``seconds_per_case`` (the time
limit). The autograder (``helpers/grading.py``) calls them with ``hidden=True``.
"""

from __future__ import annotations

import copy
import ctypes
import dis
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PASSED, FAILED, WAITING = "✓", "✗", "…"
CONTINUES = "the notebook continues with the workbook's version"

SECONDS_PER_CASE = 5.0  # plenty for any of the functions asked for; an endless loop stops here
TRAINING_SECONDS_PER_CASE = 60.0  # check_training fits a small model for one epoch
SLOWER_THAN_WORKBOOK = 20  # a case's limit is at least this many times the workbook's own time on it
LONGEST_LIMIT = 10  # ... and at most this many times the check's own limit
_ROUNDING_ROOM = 8  # times the float32 rounding measured on a case (see _reference_result)

# Which student function each check grades: {check: (notebook stem, function name)}.
GRADED: dict[str, tuple[str, str]] = {
    "check_split_rule": ("02_geocells", "split_in_two"),
    "check_haversine": ("04_distances", "haversine"),
    "check_attention": ("05_baseline_vit", "attention"),
    "check_encoder_block": ("05_baseline_vit", "encoder_block"),
    "check_training": ("06_augmentation_and_schedule", "train_one_epoch"),
    "check_eq1_loss": ("07_distance_losses", "eq1_loss"),
    "check_eq3_loss": ("07_distance_losses", "eq3_loss"),
    "check_smoothed_targets": ("07_distance_losses", "smoothed_targets"),
    "check_rollout": ("09_attention", "rollout"),
}


# --- the machinery: cases, copies, time limits, guarded text -------------------------------------


class _Differs(Exception):
    """Raised when an answer differs: ``text`` is the finding, ``hint`` the likely mistake."""

    def __init__(self, text: str, hint: str | None = None):
        super().__init__(text)
        self.text, self.hint = text, hint


class _TimedOut(BaseException):
    """Raised into the answer when its case runs past the time limit (not an Exception, so an
    ``except Exception`` in the answer does not swallow it). Made in the answer's thread, also
    when the watchdog raises it there, so it arms :meth:`_TimeLimit.trap` there."""

    def __init__(self, *args):
        super().__init__(*args)
        limit = _LIMITS.get(threading.get_ident())
        if limit is not None and limit.fired:
            limit.trap()


@dataclass(frozen=True)
class _Case:
    """One input of a check: ``args`` are the positional arguments (copied afresh for every
    call), or a function that builds them afresh; ``facts`` feed the hints."""

    name: str
    args: Any
    hidden: bool = False
    facts: dict = field(default_factory=dict)


@dataclass
class _Where:
    """What a comparison knows about its case: the label to print, whether the case's inputs
    may be shown, and the cases already passed."""

    case: _Case
    label: str
    reveal: bool
    passed: list


@dataclass(frozen=True)
class _Noun:
    """The subject of a finding, with its number, so its verbs agree ("the weights differ")."""

    text: str
    plural: bool = False

    def verb(self, singular: str, plural: str) -> str:
        return f"{self.text} {plural if self.plural else singular}"


@dataclass
class _Want:
    """The workbook's result: ``value`` (float64 where it could be) and ``slack``, per array, the
    float32 rounding measured on the case (0 where there was no float64 run)."""

    value: Any
    slack: Any = None


def _type_name(thing) -> str:
    try:
        return str(type(thing).__name__)
    except BaseException:  # a class whose name cannot be read
        return "an object"


def _text_of(error: BaseException) -> str:
    """``Type: message`` of an exception; its type name alone where ``str()`` fails or is empty."""
    name = _type_name(error)
    try:
        text = " ".join(str(error).split())
    except BaseException:  # an exception whose __str__ raises (or exits) must not escape
        return f"{name} (its message could not be read)"
    if len(text) > 160:
        text = text[:160] + "…"
    return f"{name}: {text}" if text else name


def _is_stub(function) -> bool:
    """True for a function whose body is only a docstring and ``...`` or ``pass``: its code
    does nothing but return None. Read from the bytecode, so it needs no source file."""
    code = getattr(function, "__code__", None)
    if code is None:
        return False
    for instruction in dis.get_instructions(code):
        if instruction.opname in ("RESUME", "NOP", "CACHE", "RETURN_VALUE"):
            continue
        if instruction.opname in ("LOAD_CONST", "RETURN_CONST") and instruction.argval is None:
            continue
        return False
    return True


def _fresh(value):
    """A deep copy of an input: arrays, lists, dicts, tuples, DataFrames, tensors."""
    if isinstance(value, np.ndarray):
        return np.array(value, copy=True)
    if isinstance(value, dict):
        return {key: _fresh(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_fresh(item) for item in value)
    if value is None or isinstance(value, int | float | str | np.generic):
        return value
    return copy.deepcopy(value)


def _float64(value):
    """``value`` with every float32 array (in lists, tuples and dicts too) as float64."""
    if isinstance(value, np.ndarray) and value.dtype == np.float32:
        return value.astype(np.float64)
    if isinstance(value, dict):
        return {key: _float64(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_float64(item) for item in value)
    return value


def _has_float32(value) -> bool:
    if isinstance(value, np.ndarray):
        return value.dtype == np.float32
    if isinstance(value, dict):
        return any(_has_float32(item) for item in value.values())
    if isinstance(value, list | tuple):
        return any(_has_float32(item) for item in value)
    return False


def _numpy(value) -> np.ndarray:
    from keras import ops

    return np.asarray(ops.convert_to_numpy(value))


def _numpy_tree(value):
    """The workbook's result as NumPy: tuples and lists of arrays stay tuples."""
    if isinstance(value, tuple | list):
        return tuple(_numpy_tree(item) for item in value)
    return _numpy(value)


def _distance_tree(a, b):
    """max |a - b| per array of two results of the same structure."""
    if isinstance(a, tuple):
        return tuple(_distance_tree(x, y) for x, y in zip(a, b, strict=True))
    if a.size == 0:
        return 0.0
    gap = np.abs(a.astype("float64") - b.astype("float64"))
    return float(np.nanmax(gap)) if np.isfinite(gap).any() else 0.0


class _TimeLimit:
    """Raise :class:`_TimedOut` into the calling thread after ``seconds``; ``fired`` says whether
    it struck. Used by :func:`_attempt`, which sets ``done`` the moment the answer's code is left.

    In the main thread with SIGALRM (Linux, macOS: a Jupyter or Colab kernel), an interval
    timer; a timer already set (a test runner's) is put back with its remaining time.
    Elsewhere a watchdog thread raises through ``PyThreadState_SetAsyncExc`` (CPython). Once
    it has struck, :func:`_trap` makes the answer's next line raise again, so a bare ``except:``
    in a loop does not swallow it; the timer repeats every half second, to try again and to cut
    a ``time.sleep`` (SIGALRM only) or a long step short as soon as it returns.
    """

    REPEAT_S = 0.5

    def __init__(self, seconds: float):
        self.seconds = max(float(seconds), 0.01)
        self.fired = self.done = False
        self._trace = None

    def _expire(self, *_):
        if self.done:
            return
        self.fired = True
        raise _TimedOut(f"past {self.seconds:g} s")

    def __enter__(self):
        self._started = time.monotonic()
        self._thread = threading.get_ident()
        _LIMITS[self._thread] = self
        in_main = threading.current_thread() is threading.main_thread()
        self._alarm = in_main and hasattr(signal, "setitimer") and hasattr(signal, "SIGALRM")
        if self._alarm:
            self._old_handler = signal.signal(signal.SIGALRM, self._expire)
            self._old_timer = signal.setitimer(signal.ITIMER_REAL, self.seconds, self.REPEAT_S)
        else:
            self._stop = threading.Event()
            self._watchdog = threading.Thread(target=self._watch, daemon=True, name="checks-time-limit")
            self._watchdog.start()
        return self

    def _watch(self):
        wait = self.seconds
        while not self._stop.wait(wait) and not self.done:
            self.fired = True
            _raise_in_thread(self._thread, _TimedOut)
            wait = self.REPEAT_S

    def trap(self) -> None:
        """Make the next line of the answer's frames (below :func:`_attempt`) raise. Python drops
        a trace function that raised, so every strike of the timer sets it again."""
        if self.done:
            return
        if self._trace is None:
            self._trace = (sys.gettrace(),)  # a debugger's or coverage's, put back at the end
        frame = sys._getframe(1)
        while frame is not None and frame.f_code is not _attempt.__code__:
            frame.f_trace = _trap
            frame = frame.f_back
        sys.settrace(_trap)

    def __exit__(self, *_):
        self.done = True  # from here on a late alarm or trap raises nothing
        try:
            if self._trace is not None:
                sys.settrace(self._trace[0])
            if self._alarm:
                signal.setitimer(signal.ITIMER_REAL, 0)
        finally:
            _LIMITS.pop(self._thread, None)
            if self._alarm:
                signal.signal(signal.SIGALRM, self._old_handler)
                delay, interval = self._old_timer
                if delay > 0:  # someone else's timer: give it back what it had left
                    left = max(delay - (time.monotonic() - self._started), 0.001)
                    signal.setitimer(signal.ITIMER_REAL, left, interval)
            else:
                self._stop.set()
                self._watchdog.join()
                if self.fired:  # a raise still pending in this thread must not land in the check's code
                    _raise_in_thread(self._thread, None)
        return False


_LIMITS: dict[int, _TimeLimit] = {}  # the time limit running in each thread


def _trap(frame, event, arg):
    """Trace function after a time limit struck: raise again at the next line of a frame not
    of this module. The first line after a swallowed raise is in the ``except`` clause that
    swallowed it, outside its ``try``: from there the raise leaves the loop."""
    limit = _LIMITS.get(threading.get_ident())
    if limit is None or limit.done:
        return None
    if event == "line" and frame.f_code.co_filename != __file__:
        raise _TimedOut("past the time limit")
    return _trap


def _raise_in_thread(thread_id: int, exception: type[BaseException] | None) -> None:
    """Raise ``exception`` in thread ``thread_id`` at its next Python step (None: cancel)."""
    set_async = getattr(getattr(ctypes, "pythonapi", None), "PyThreadState_SetAsyncExc", None)
    if set_async is None:  # not CPython: no way to stop the thread; the check waits for it
        return
    set_async(ctypes.c_ulong(thread_id), ctypes.py_object(exception) if exception else ctypes.c_void_p(0))


class _UserInterrupts:
    """Tell a real Ctrl-C (SIGINT, Jupyter's interrupt button) apart from a KeyboardInterrupt
    that the answer raises itself: ``pressed`` is True after the former. Main thread only;
    elsewhere Ctrl-C does not reach the check's thread anyway."""

    def __init__(self):
        self.pressed = False
        self._old = None

    def _on_sigint(self, *_):
        self.pressed = True
        raise KeyboardInterrupt

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            try:
                self._old = signal.signal(signal.SIGINT, self._on_sigint)
            except (ValueError, OSError):  # an embedding that owns its signals
                self._old = None
        return self

    def __exit__(self, *_):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


@dataclass
class _Outcome:
    value: Any = None
    error: BaseException | None = None
    timed_out: bool = False


def _attempt(action: Callable[[], Any], seconds: float, user: _UserInterrupts) -> _Outcome:
    """``action()`` under a time limit, with everything it raises caught, a real Ctrl-C apart."""
    limit = _TimeLimit(seconds)
    try:
        with limit:
            try:
                value = action()
                limit.done = True  # first thing back in the check's code: no more raising
            except BaseException as error:  # the answer's code: whatever it raises is a finding
                limit.done = True
                if user.pressed:
                    raise KeyboardInterrupt from None
                if limit.fired or isinstance(error, _TimedOut):
                    return _Outcome(timed_out=True)
                return _Outcome(error=error)
    except _TimedOut:  # the limit struck as the block ended
        return _Outcome(timed_out=True)
    if user.pressed:  # the answer swallowed the Ctrl-C: stop as the user asked
        raise KeyboardInterrupt
    if limit.fired:  # the answer swallowed the time limit and went on
        return _Outcome(timed_out=True)
    return _Outcome(value=value)


def _grade(
    title: str,
    answer,
    cases: list[_Case],
    *,
    reference: Callable,
    compare: Callable,
    passed: str,
    hidden: bool,
    quiet: bool,
    seconds: float,
    run: Callable | None = None,
    exact: Callable | bool = True,
    numpy: bool = True,
    remember: dict | None = None,
) -> bool:
    """Run the answer and the workbook's function on every case, compare, print one line.

    ``run(function, args)`` calls a function on a case's (copied) arguments, by default
    ``function(*args)``; ``reference`` is the workbook's function, called the same way and,
    with ``numpy``, turned into NumPy. On float32 inputs the comparison is against a float64
    result: ``exact(*args)`` where ``exact`` is a function, ``reference`` on float64 copies
    where it is True, none where it is False (a reference that keeps float32 throughout).
    ``compare(got, want, where)`` raises :class:`_Differs`. ``remember`` keeps the workbook's
    results (and times) by case, for a reference too slow to run again at every call.
    """
    run = run or (lambda function, args: function(*args))

    def say(mark: str, text: str) -> None:
        if not quiet:
            print(f"{mark} Your turn, {title}: {text}")

    def fail(text: str) -> bool:
        say(FAILED, f"{text} {CONTINUES.capitalize()}.")
        return False

    if not callable(answer):
        return fail(f"expected your function, got {_type_name(answer)}.")
    shown = [case for case in cases if hidden or not case.hidden]
    done: list[_Case] = []
    with _UserInterrupts() as user, warnings.catch_warnings():
        # Keras' advice (on shuffle, on a softmax over one token) is not the check's line
        warnings.simplefilter("ignore")
        if _attempt(lambda: _is_stub(answer), seconds, user).value:
            say(WAITING, f"not written yet (its body is still `...`); {CONTINUES}.")
            return False
        try:
            _numpy(np.zeros(1))  # imports Keras (seconds), which must not count as the workbook's time
            hidden_number = 0
            for number, case in enumerate(shown):
                if case.hidden:
                    hidden_number += 1
                label = f"hidden case {hidden_number}" if case.hidden else case.name
                where = _Where(case, label, reveal=not case.hidden, passed=list(done))
                if remember is not None and (hidden, number) in remember:
                    want, workbook_s = remember[hidden, number]
                else:
                    started = time.perf_counter()
                    want = _reference_result(case, reference, run, exact, numpy)
                    workbook_s = time.perf_counter() - started
                    if remember is not None:
                        remember[hidden, number] = want, workbook_s
                limit = min(max(seconds, SLOWER_THAN_WORKBOOK * workbook_s), LONGEST_LIMIT * seconds)
                given = _arguments(case)  # kept: to tell the student if the answer changed it
                outcome = _attempt(lambda given=given: run(answer, given), limit, user)
                if outcome.timed_out:
                    return fail(
                        f"on {label}, your function ran past the time limit of {limit:.3g} s "
                        "(an endless loop?)."
                    )
                if outcome.error is not None:
                    return fail(f"on {label}, your function raised {_describe(outcome.error, user)}.")
                if outcome.value is None:
                    return fail(f"on {label}, your function returned None: a missing `return`?")
                verdict = _attempt(
                    lambda got=outcome.value, want=want, where=where: compare(got, want, where), limit, user
                )
                if verdict.timed_out:
                    return fail(f"on {label}, reading your result ran past the time limit of {limit:.3g} s.")
                if isinstance(verdict.error, _Differs):
                    hints = [verdict.error.hint] if verdict.error.hint else []
                    if _changed_in_place(given, case):
                        hints.append("your function changes its arguments in place; work on copies.")
                    hint = f" Hint: {' Also: '.join(hints)}" if hints else ""
                    return fail(f"{verdict.error.text}{hint}")
                if verdict.error is not None:
                    return fail(
                        f"on {label}, your result could not be read ({_describe(verdict.error, user)})."
                    )
                done.append(case)
        except BaseException as error:  # the workbook's side failed: a check must never stop the notebook
            if user.pressed:
                raise
            return fail(f"could not be checked ({_text_of(error)}).")
    extra = f", {hidden_number} of them hidden" if hidden_number else ""
    say(PASSED, f"{passed} ({len(shown)} input{'' if len(shown) == 1 else 's'}{extra}).")
    return True


def _describe(error: BaseException, user: _UserInterrupts) -> str:
    """:func:`_text_of` under a time limit: the answer's exception may run its own ``__str__``."""
    text = _attempt(lambda: _text_of(error), 1.0, user).value
    return text if isinstance(text, str) else f"{_type_name(error)} (its message could not be read)"


def _changed_in_place(given, case: _Case) -> bool:
    """Did the answer change the arrays it was given (compared with a fresh copy of the case)?"""
    if callable(case.args):
        return False

    def changed(mine, original) -> bool:
        if isinstance(original, np.ndarray):
            return not (isinstance(mine, np.ndarray) and np.array_equal(mine, original, equal_nan=True))
        if isinstance(original, dict):
            return any(changed(mine.get(key), value) for key, value in original.items())
        if isinstance(original, list | tuple):
            return any(changed(a, b) for a, b in zip(mine, original, strict=False))
        return False

    try:
        return changed(given, case.args)
    except Exception:  # an argument replaced by something that cannot be compared: changed
        return True


def _arguments(case: _Case):
    return case.args() if callable(case.args) else _fresh(case.args)


def _reference_result(case: _Case, reference, run, exact, numpy: bool) -> _Want:
    """The workbook's result on a case, in NumPy; against float64 where the inputs are float32.

    The room for rounding (``slack``) is the larger of two distances from the float64 result:
    the workbook's own float32 result's, and that of the float64 result on inputs nudged by
    a float32 rounding (:func:`_nudged`). The second measures how much any float32 computation
    may stray on this input (large logits stray more), whatever order its steps come in.
    """
    if not numpy:  # results that are not arrays (check_training)
        return _Want(run(reference, _arguments(case)))
    value = _numpy_tree(run(reference, _arguments(case)))
    arguments = _arguments(case)
    if exact is False or not _has_float32(arguments):
        return _Want(value, _distance_tree(value, value))
    function = reference if exact is True else exact
    precise = _numpy_tree(run(function, _float64(arguments)))
    nudged = _numpy_tree(run(function, _nudged(_float64(arguments), np.random.default_rng(0))))
    slack = _larger_tree(_distance_tree(value, precise), _distance_tree(nudged, precise))
    return _Want(precise, slack)


def _nudged(value, rng):
    """Float64 arrays moved by up to two float32 roundings, each number its own way."""
    if isinstance(value, np.ndarray) and value.dtype == np.float64:
        return value * (1 + 2 * np.finfo(np.float32).eps * rng.uniform(-1, 1, value.shape))
    if isinstance(value, dict):
        return {key: _nudged(item, rng) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_nudged(item, rng) for item in value)
    return value


def _larger_tree(a, b):
    if isinstance(a, tuple):
        return tuple(_larger_tree(x, y) for x, y in zip(a, b, strict=True))
    return max(a, b)


# --- comparing one array ---------------------------------------------------------------------------


def _shape_of(value) -> tuple | None:
    """The ``.shape`` of an array-like without converting it; None if it has none (a list, a float)."""
    shape = getattr(value, "shape", None)
    if shape is None:
        return None
    try:
        return tuple(int(size) for size in shape)
    except (TypeError, ValueError):  # a symbolic shape with unknown sizes
        return None


def _kind(dtype) -> str | None:
    """'f', 'i', 'b', 'c' or 'O' for a NumPy, TensorFlow or JAX dtype; None if unknown."""
    try:
        from keras import backend

        name = backend.standardize_dtype(dtype)
    except BaseException:
        try:
            name = np.dtype(dtype).name
        except BaseException:
            return None
    for prefix, kind in (("bfloat", "f"), ("float", "f"), ("uint", "i"), ("int", "i"), ("bool", "b")):
        if name.startswith(prefix):
            return kind
    return "c" if name.startswith("complex") else "O"


def _numbers(count: int) -> str:
    return f"{count:,} number" + ("" if count == 1 else "s")


def _refuse_shape(got_shape, want_shape, where: _Where, what: _Noun, hint: str | None):
    size = int(np.prod(got_shape, dtype=np.float64)) if got_shape else 1
    raise _Differs(
        f"on {where.label}, {what.verb('has', 'have')} shape {got_shape} ({_numbers(size)}); "
        f"expected {want_shape} ({_numbers(int(np.prod(want_shape)) if want_shape else 1)}).",
        hint,
    )


def _read(got, want: np.ndarray, where: _Where, what: _Noun, shape_hint: str | None = None) -> np.ndarray:
    """The answer as a NumPy array, after its shape and kind of number are found right; the
    shape is read from ``.shape`` first, so nothing large is copied to find it wrong."""
    if got is None:
        raise _Differs(
            f"on {where.label}, {what.verb('is', 'are')} None; expected an array of shape {want.shape}."
        )
    shape = _shape_of(got)
    if shape is not None and shape != want.shape:
        _refuse_shape(shape, want.shape, where, what, shape_hint)
    if shape is None and isinstance(got, list | tuple):
        _check_nested_lengths(got, want.shape, where, what, shape_hint)
    kind = _kind(got.dtype) if hasattr(got, "dtype") else None
    _check_kind(kind, got, want, where, what)
    array = _numpy(got)
    if array.shape != want.shape:
        _refuse_shape(array.shape, want.shape, where, what, shape_hint)
    _check_kind(_kind(array.dtype), array, want, where, what)
    return array


def _check_nested_lengths(got, want_shape, where, what, shape_hint) -> None:
    """A list answer: its lengths level by level, and the shapes of arrays inside it, before any copy."""
    if not want_shape or len(got) != want_shape[0]:
        _refuse_shape((len(got),), want_shape, where, what, shape_hint)
    for item in got:
        inner = _shape_of(item)
        if inner is not None and inner != tuple(want_shape[1:]):
            _refuse_shape((len(got), *inner), want_shape, where, what, shape_hint)
        if inner is None and isinstance(item, list | tuple):
            _check_nested_lengths(item, want_shape[1:], where, what, shape_hint)


def _check_kind(kind, got, want, where, what) -> None:
    wanted = want.dtype.kind
    if kind is None:
        return
    dtype = getattr(got, "dtype", "")
    if wanted == "f" and kind != "f":
        raise _Differs(
            f"on {where.label}, {what.verb('is', 'are')} {dtype}; expected floating point numbers.",
            "NumPy turns a division of integers into floats; check where your numbers become whole ones.",
        )
    if wanted in "iu" and kind not in "ib":
        raise _Differs(
            f"on {where.label}, {what.verb('is', 'are')} {dtype}; expected whole numbers (int).",
            "convert with .astype(int).",
        )


def _compare(
    got,
    want: np.ndarray,
    where: _Where,
    what: _Noun,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    slack: float = 0.0,
    shape_hint: str | None = None,
    hint: Callable[[np.ndarray], str | None] | None = None,
) -> np.ndarray:
    """Raise :class:`_Differs` unless ``got`` matches ``want`` in shape, kind and value; return
    ``got`` as float64. ``slack`` widens the tolerance by the workbook's own float32 rounding;
    ``hint(got)`` names the likely mistake when values differ."""
    got = _read(got, want, where, what, shape_hint)
    got_f, want_f = got.astype("float64"), want.astype("float64")
    if np.isfinite(want_f).all() and not np.isfinite(got_f).all():
        index = tuple(int(i) for i in np.argwhere(~np.isfinite(got_f))[0])
        at = f" at index {index}" if where.reveal else ""
        raise _Differs(
            f"on {where.label}, {what.verb('holds', 'hold')} {got_f[index]}{at}; expected finite numbers.",
            hint(got_f) if hint else None,
        )
    if rtol == atol == slack == 0:  # whole numbers: count the places that differ
        wrong = got_f != want_f
        if wrong.any():
            first = tuple(int(i) for i in np.argwhere(wrong)[0])
            shown = f" (first at index {first}: got {got_f[first]:g}, expected {want_f[first]:g})"
            raise _Differs(
                f"on {where.label}, {what.verb('differs', 'differ')} from the workbook's at "
                f"{int(wrong.sum()):,} of {wrong.size:,} places{shown if where.reveal else ''}.",
                hint(got_f) if hint else None,
            )
        return got_f
    tolerance = atol + _ROUNDING_ROOM * slack + rtol * np.abs(want_f)
    gap = np.abs(got_f - want_f)
    if not (np.isnan(got_f) == np.isnan(want_f)).all() or (np.nan_to_num(gap) > tolerance).any():
        worst = np.where(
            np.isnan(got_f) & np.isnan(want_f), -np.inf, np.nan_to_num(gap - tolerance, nan=np.inf)
        )
        index = tuple(int(i) for i in np.unravel_index(np.argmax(worst), worst.shape)) if worst.ndim else ()
        shown = (
            f" (index {index}: got {got_f[index]:.6g}, expected {want_f[index]:.6g})" if where.reveal else ""
        )
        raise _Differs(
            f"on {where.label}, {what.verb('differs', 'differ')} from the workbook's by up to "
            f"{np.nanmax(gap):.3g}{shown}.",
            hint(got_f) if hint else None,
        )
    return got_f


def _same(a, b, rtol=1e-4, atol=1e-5) -> bool:
    """Do two arrays agree (for hints: is the answer this known mistake?)."""
    try:
        a, b = np.asarray(a, dtype="float64"), np.asarray(b, dtype="float64")
        return a.shape == b.shape and bool(np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True))
    except BaseException:
        return False


def _constant_ratio(got, want) -> float | None:
    """The ratio got / want if it is the same everywhere (a missing factor), else None. One
    number alone only counts as a factor when it is 2 or 1/2."""
    nonzero = np.abs(want) > 1e-9
    if not nonzero.any() or not np.isfinite(got).all():
        return None
    ratios = got[nonzero] / want[nonzero]
    ratio = float(np.median(ratios))
    if not np.allclose(ratios, ratio, rtol=1e-4) or np.isclose(ratio, 1.0, rtol=1e-7):
        return None
    return ratio if ratios.size > 1 or np.isclose(ratio, [0.5, 2.0], rtol=1e-6).any() else None


def _pair(got, where: _Where, names: str) -> tuple:
    """The answer as its two parts, or a finding that it should have returned two."""
    if not isinstance(got, tuple | list) or len(got) != 2:
        raise _Differs(
            f"on {where.label}, your function returned {_type_name(got)}; expected two things, {names}.",
            f"end with `return {names.strip('()')}`.",
        )
    return got[0], got[1]


# --- 02: the splitting rule -------------------------------------------------------------------


def _three_villages(seed: int = 9) -> np.ndarray:
    """(lng, lat) of three villages in a row running north-west to south-east, 9, 7 and 6 points.

    Two cuts are local optima of 2-means here: the first village against the other two (the
    better one) and the first two against the third. K-means started once (``n_init=1``,
    scikit-learn's default) lands in the worse one for 15 of the seeds 0-15 with this
    layout; ten starts (``n_init=10``) find the better one for every seed. Found by searching
    jitter seeds for this layout; a test keeps it true.
    """
    rng = np.random.default_rng(seed)
    along = np.concatenate([rng.normal(centre, 0.01, n) for centre, n in ((0.0, 9), (0.11, 7), (0.23, 6))])
    across = rng.normal(0.0, 0.01, along.size)
    turn = np.radians(30.0)
    return np.column_stack(
        [
            10.0 + np.cos(turn) * along - np.sin(turn) * across,
            56.1 - np.sin(turn) * along - np.cos(turn) * across,
        ]
    )


def _one_start_split(lnglat, seed):
    """The rule with K-means started once: the mistake :func:`_three_villages` catches."""
    from sklearn.cluster import KMeans

    lnglat = np.asarray(lnglat, dtype=float)
    side = KMeans(n_clusters=2, n_init=1, random_state=seed).fit_predict(lnglat)
    north = int(lnglat[side == 1, 1].mean() > lnglat[side == 0, 1].mean())
    return (side != north).astype(int)


def check_split_rule(
    split_in_two, *, hidden: bool = False, quiet: bool = False, seconds_per_case: float | None = None
) -> bool:
    """Notebook 02: ``split_in_two(lnglat, seed)`` against :func:`helpers.geo.split_in_two`.

    Inputs, simple to hard: two points, two clouds one above the other, two side by side, a
    Danish city's worth of random points, and three villages in a row where K-means needs
    its ten starts (``n_init=10``) to find the cut ``geo.make_geocells`` makes. The sides
    must be equal point for point (0 = the northern half).
    """
    from threadpoolctl import threadpool_limits

    from helpers import geo

    rng = np.random.default_rng(2)
    stacked = np.concatenate(
        [rng.normal([10.2, 56.3], 0.02, (40, 2)), rng.normal([10.2, 56.1], 0.02, (25, 2))]
    )
    beside = np.concatenate(
        [rng.normal([12.3, 55.7], 0.02, (30, 2)), rng.normal([12.6, 55.68], 0.02, (30, 2))]
    )
    city = np.column_stack([rng.uniform(12.45, 12.65, 300), rng.uniform(55.6, 55.75, 300)])
    other_city = np.column_stack([rng.uniform(10.1, 10.3, 200), rng.uniform(56.1, 56.2, 200)])
    villages = _three_villages()
    cases = [
        _Case(f"{name} (lnglat {points.shape}, seed {seed})", (points, seed), hidden)
        for name, points, seed, hidden in (
            ("two points, one north of the other", np.array([[9.9, 57.0], [10.0, 56.0]]), 0, False),
            ("two clouds, one north of the other", stacked, 0, False),
            ("two clouds side by side", beside, 0, False),
            ("300 random points in Copenhagen", city, 3, False),
            ("three villages in a row", villages, 0, False),
            ("", villages, 4, True),
            ("", villages, 11, True),
            ("", other_city, 7, True),
            ("", villages[::-1].copy(), 5, True),
        )
    ]

    def run(function, args):
        with threadpool_limits(limits=1, user_api="openmp"):  # see geo._two_means: spinning threads
            return function(args[0], seed=args[1])

    def compare(got, want, where):
        want = want.value
        lnglat, seed = where.case.args

        def hint(sides):
            if set(np.unique(sides)) == {1, 2}:
                return "sides numbered 1 and 2? Number them 0 and 1."
            if not set(np.unique(sides)) <= {0, 1}:
                return "every point's side is 0 or 1."
            if len(np.unique(sides)) == 1:
                return "all points on one side: K-means with k = 2 cuts them in two."
            if (sides == 1 - want).all():
                return "halves swapped? Side 0 is the half whose mean latitude (column 1) is larger."
            one_start = _one_start_split(lnglat, seed)
            if (sides == one_start).all() or (sides == 1 - one_start).all():
                return (
                    "this is K-means' cut with a single start (n_init=1, scikit-learn's default), "
                    "which can settle in a worse cut: use ten starts, as the docstring says."
                )
            return "cluster both columns of lnglat, with k = 2 and the seed as random_state."

        _compare(got, want, where, _Noun("the sides", plural=True), rtol=0, atol=0, hint=hint)

    return _grade(
        "the splitting rule",
        split_in_two,
        cases,
        reference=geo.split_in_two,
        compare=compare,
        passed="the same two halves as geo.split_in_two, the northern half numbered 0",
        hidden=hidden,
        quiet=quiet,
        seconds=seconds_per_case or SECONDS_PER_CASE,
        run=run,
    )


# --- 04: haversine ----------------------------------------------------------------------------


def _plain_haversine(lat1, lng1, lat2, lng2, radians=True):
    """The formula in float64, for hints: with degrees into the sine when ``radians`` is False."""
    convert = np.radians if radians else (lambda v: v)
    φ1, λ1, φ2, λ2 = (convert(np.asarray(v, dtype=float)) for v in (lat1, lng1, lat2, lng2))
    a = np.sin((φ2 - φ1) / 2) ** 2 + np.cos(φ1) * np.cos(φ2) * np.sin((λ2 - λ1) / 2) ** 2
    return 2 * 6371.0088 * np.arcsin(np.sqrt(np.clip(a, 0, 1)))


def check_haversine(
    haversine, *, hidden: bool = False, quiet: bool = False, seconds_per_case: float | None = None
) -> bool:
    """Notebook 04: ``haversine(lat1, lng1, lat2, lng2)`` in km against :func:`helpers.geo.haversine_km`.

    Inputs, simple to hard: two cities as plain floats, a point to itself (0 km), random
    pairs in Denmark (arrays), one point against many (broadcasting), pairs across the globe
    and across the date line. Values must agree to 1 part in a million.
    """
    from helpers import geo

    rng = np.random.default_rng(4)
    lat1, lat2 = rng.uniform(54.5, 57.8, (2, 10))
    lng1, lng2 = rng.uniform(8.0, 15.2, (2, 10))
    grid_lat, grid_lng = rng.uniform(-80, 80, (2, 3, 4))
    inputs = [
        ("Aarhus to Odense as plain floats", (56.1572, 10.2107, 55.4038, 10.4024), False),
        ("a point to itself (0 km)", (np.array([55.0, 56.0]), np.array([10.0, 11.0])) * 2, False),
        ("10 random pairs in Denmark", (lat1, lng1, lat2, lng2), False),
        ("Copenhagen against 10 points (broadcasting)", (55.6761, 12.5683, lat2, lng2), False),
        (
            "Copenhagen to Sydney and to Quito",
            (55.6761, 12.5683, np.array([-33.87, -0.18]), np.array([151.21, -78.47])),
            False,
        ),
        ("across the date line (Fiji to Samoa)", (-17.7, 178.0, -13.8, -172.1), False),
        ("", (grid_lat, grid_lng, grid_lat[::-1], grid_lng[:, ::-1]), True),
        ("", (90.0, 0.0, np.array([55.0, -90.0, 0.0]), np.array([12.0, 45.0, 180.0])), True),
        ("", (0.0, 0.0, 0.0, 180.0), True),
    ]
    cases = [_Case(name, args, hidden) for name, args, hidden in inputs]

    def compare(got, want, where):
        args = where.case.args

        def hint(km):
            if _same(km, _plain_haversine(*args, radians=False), rtol=1e-6):
                return "degrees into np.sin and np.cos? They take radians: np.radians first."
            if _same(km, _plain_haversine(args[1], args[0], args[3], args[2]), rtol=1e-6):
                return "latitude and longitude swapped? The arguments are (lat1, lng1, lat2, lng2)."
            ratio = _constant_ratio(km, want.value)
            if ratio is not None and np.isclose(ratio, 0.5, rtol=1e-3):
                return "half the workbook's distance: the factor 2 of 2R·arcsin missing?"
            if ratio is not None:
                return (
                    f"every distance is {ratio:.7g} times the workbook's: a constant factor, "
                    "or a radius other than 6371.0088 km?"
                )
            return "check the formula term by term: the half-angle sines are squared."

        shape_hint = "one point against many: the result has the broadcast shape of the inputs."
        _compare(
            got,
            want.value,
            where,
            _Noun("the distance (km)") if not want.value.shape else _Noun("the distances (km)", plural=True),
            rtol=1e-6,
            atol=1e-6,
            slack=want.slack,
            shape_hint=shape_hint,
            hint=hint,
        )

    return _grade(
        "haversine",
        haversine,
        cases,
        reference=geo.haversine_km,
        compare=compare,
        passed="the same km as geo.haversine_km, in Denmark, across the globe and broadcasting",
        hidden=hidden,
        quiet=quiet,
        seconds=seconds_per_case or SECONDS_PER_CASE,
    )


# --- 05: attention and the encoder block ------------------------------------------------------


def _random(rng, *shape, scale=1.0):
    return (rng.normal(size=shape) * scale).astype("float32")


def _softmax(logits, axis=-1):
    shifted = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def _attention_hint(weights, q, k) -> str | None:
    """The likely mistake behind attention weights that differ, from q and k (float64)."""
    q, k = np.asarray(q, dtype="float64"), np.asarray(k, dtype="float64")
    logits = q @ np.swapaxes(k, -1, -2)
    d = q.shape[-1]
    right = _softmax(logits / np.sqrt(d))
    if _same(weights, np.swapaxes(right, -1, -2)):
        return "weights transposed? weights[..., i, j] is what query i takes from key j."
    if _same(weights, _softmax(logits)):
        return "no scale: divide q kᵀ by √d before the softmax."
    if _same(weights, _softmax(logits / d)):
        return "divided by d: the scale is √d."
    if np.isfinite(weights).all() and not np.allclose(weights.sum(axis=-1), 1.0, atol=1e-3):
        return (
            "rows do not sum to 1: softmax over the wrong axis? Each query's row runs over the keys, "
            "the last axis."
        )
    if not np.isfinite(weights).all():
        return "the softmax overflows on large values: ops.softmax subtracts each row's maximum for you."
    return None


def check_attention(
    attention, *, hidden: bool = False, quiet: bool = False, seconds_per_case: float | None = None
) -> bool:
    """Notebook 05: ``attention(q, k, v)`` -> (output, weights) against
    :func:`helpers.vit_from_scratch.scaled_dot_product_attention`.

    q, k, v: (n, H, T+1, d) float32. Inputs, simple to hard: one head of three tokens, two
    tokens, d = 1, random heads of two sizes, and large values (a softmax must not
    overflow). The weights (n, H, T+1, T+1) are compared first, then the output (n, H, T+1, d).
    """
    from helpers import vit_from_scratch

    rng = np.random.default_rng(5)
    shapes = [
        ("1 image, 1 head, 3 tokens, d = 2", (1, 1, 3, 2), 1.0, False),
        ("two tokens (3 images, 2 heads, d = 4)", (3, 2, 2, 4), 1.0, False),
        ("d = 1 (2 images, 1 head, 6 tokens)", (2, 1, 6, 1), 1.0, False),
        ("1 image, 2 heads, 5 tokens, d = 16", (1, 2, 5, 16), 1.0, False),
        ("2 images, 4 heads, 17 tokens, d = 8", (2, 4, 17, 8), 1.0, False),
        ("large values (x 30; 2 images, 2 heads, 9 tokens, d = 8)", (2, 2, 9, 8), 30.0, False),
        ("", (4, 3, 10, 6), 1.0, True),
        ("", (1, 6, 50, 32), 2.0, True),
        ("", (2, 2, 1, 3), 1.0, True),
    ]
    cases = [
        _Case(name, tuple(_random(rng, *shape, scale=scale) for _ in range(3)), hidden)
        for name, shape, scale, hidden in shapes
    ]

    def compare(got, want, where):
        output, weights = _pair(got, where, "(output, weights)")
        (want_output, want_weights), (output_slack, weights_slack) = want.value, want.slack
        q, k, _ = where.case.args
        _compare(
            weights,
            want_weights,
            where,
            _Noun("the attention weights", plural=True),
            rtol=1e-4,
            atol=1e-5,
            slack=weights_slack,
            shape_hint="one weight per (query, key) pair: (n, H, T+1, T+1).",
            hint=lambda w: _attention_hint(w, q, k),
        )
        _compare(
            output,
            want_output,
            where,
            _Noun("the output"),
            rtol=1e-4,
            atol=1e-4,
            slack=output_slack,
            shape_hint="the output has the shape of v: weights @ v.",
            hint=lambda _: "the weights are right: the output is weights @ v.",
        )

    return _grade(
        "scaled dot-product attention",
        attention,
        cases,
        reference=vit_from_scratch.scaled_dot_product_attention,
        compare=compare,
        passed="the same output and weights as the workbook's, large values included",
        hidden=hidden,
        quiet=quiet,
        seconds=seconds_per_case or SECONDS_PER_CASE,
    )


def random_block_weights(rng, width: int, heads: int, mlp: int) -> dict:
    """Random weights of one encoder block, named as in `vit_from_scratch.weights_from_backbone`."""
    block = {f"w{name}": _random(rng, width, width, scale=width**-0.5) for name in "qkvo"}
    block |= {f"b{name}": _random(rng, width, scale=0.1) for name in "qkvo"}
    block |= {
        "ln1_gamma": 1 + _random(rng, width, scale=0.1),
        "ln1_beta": _random(rng, width, scale=0.1),
        "ln2_gamma": 1 + _random(rng, width, scale=0.1),
        "ln2_beta": _random(rng, width, scale=0.1),
        "w1": _random(rng, width, mlp, scale=width**-0.5),
        "b1": _random(rng, mlp, scale=0.1),
        "w2": _random(rng, mlp, width, scale=mlp**-0.5),
        "b2": _random(rng, width, scale=0.1),
    }
    return block


def _block_variants(x, w, heads, epsilon):
    """{hint: tokens} of the usual mistakes in a pre-LayerNorm block, in float64."""
    from keras import ops

    from helpers import vit_from_scratch

    x, w = _float64(np.asarray(x)), _float64(dict(w))
    norm, attend = vit_from_scratch.layer_norm, vit_from_scratch.self_attention

    def mlp(t, approximate=False):
        return (
            ops.matmul(ops.gelu(ops.matmul(t, w["w1"]) + w["b1"], approximate=approximate), w["w2"]) + w["b2"]
        )

    attended, _ = attend(norm(x, w["ln1_gamma"], w["ln1_beta"], epsilon), w, heads)
    first = x + attended
    post1 = norm(x + attend(x, w, heads)[0], w["ln1_gamma"], w["ln1_beta"], epsilon)
    variants = {
        "LayerNorm after adding (post-LayerNorm)? This block normalises first: x + attention(LN(x)).": norm(
            post1 + mlp(post1), w["ln2_gamma"], w["ln2_beta"], epsilon
        ),
        "residual connections missing? Each half adds its result to its input: x + ...": mlp(
            norm(attended, w["ln2_gamma"], w["ln2_beta"], epsilon)
        ),
        "the tanh approximation of GELU? Use ops.gelu(..., approximate=False).": first
        + mlp(norm(first, w["ln2_gamma"], w["ln2_beta"], epsilon), approximate=True),
        "the second LayerNorm missing? The MLP reads LN(x) with ln2_gamma and ln2_beta.": first + mlp(first),
    }
    return {hint: _numpy(tokens) for hint, tokens in variants.items()}


def check_encoder_block(
    encoder_block, *, hidden: bool = False, quiet: bool = False, seconds_per_case: float | None = None
) -> bool:
    """Notebook 05: ``encoder_block(x, w, heads, epsilon)`` -> (tokens, weights) against
    :func:`helpers.vit_from_scratch.encoder_block`.

    x: (n, T+1, D) float32 tokens; w: one block's weights as in ``weights["blocks"][0]``.
    Inputs, simple to hard: random blocks of three sizes, then one with inputs around 3
    (LayerNorm must come first).
    """
    from helpers import vit_from_scratch

    rng = np.random.default_rng(6)
    sizes = [  # name, (images, tokens, D, heads, MLP width, offset of the inputs), hidden
        ("1 image, 5 tokens, D = 8, 2 heads", (1, 5, 8, 2, 16, 0.0), False),
        ("two tokens, D = 12, 3 heads", (2, 2, 12, 3, 24, 0.0), False),
        ("2 images, 17 tokens, D = 16, 4 heads", (2, 17, 16, 4, 32, 0.0), False),
        ("1 image, 5 tokens, D = 8, 2 heads, inputs around 3", (1, 5, 8, 2, 16, 3.0), False),
        ("", (3, 10, 24, 6, 48, -2.0), True),
        ("", (1, 1, 4, 1, 8, 0.0), True),
    ]
    cases = [
        _Case(
            name,
            (
                _random(rng, n, tokens, width) + np.float32(shift),
                random_block_weights(rng, width, heads, mlp),
                heads,
                1e-6,
            ),
            hidden,
        )
        for name, (n, tokens, width, heads, mlp, shift), hidden in sizes
    ]

    def compare(got, want, where):
        tokens, weights = _pair(got, where, "(tokens, attention weights)")
        (want_tokens, want_weights), (tokens_slack, weights_slack) = want.value, want.slack

        def weights_hint(_):
            return (
                "the attention reads LN(x) with ln1_gamma and ln1_beta: "
                "vit_from_scratch.self_attention(LN(x), w, heads)."
            )

        def tokens_hint(found):
            for hint, variant in _block_variants(*where.case.args).items():
                if _same(found, variant, rtol=1e-3, atol=1e-3):
                    return hint
            return "the weights are right; check the MLP half: x + W2 GELU(W1 LN(x) + b1) + b2."

        _compare(
            weights,
            want_weights,
            where,
            _Noun("the attention weights", plural=True),
            rtol=1e-4,
            atol=1e-5,
            slack=weights_slack,
            hint=weights_hint,
        )
        _compare(
            tokens,
            want_tokens,
            where,
            _Noun("the tokens", plural=True),
            rtol=1e-4,
            atol=1e-4,
            slack=tokens_slack,
            shape_hint="a block keeps the tokens' shape (n, T+1, D).",
            hint=tokens_hint,
        )

    return _grade(
        "the encoder block",
        encoder_block,
        cases,
        reference=vit_from_scratch.encoder_block,
        compare=compare,
        passed="the same tokens and weights as the workbook's pre-LayerNorm block",
        hidden=hidden,
        quiet=quiet,
        seconds=seconds_per_case or SECONDS_PER_CASE,
    )


# --- 06: compile and fit -------------------------------------------------------------------------


def train_one_epoch_reference(classifier, train_data, val_data, optimizer):
    """The workbook's answer to notebook 06's Your turn: compile, then fit one epoch.

    Cross-entropy on the head's probabilities (:func:`helpers.losses.cross_entropy`, which
    reads the cell from the pipeline's [cell, lat, lng] labels), top-1 and top-3 accuracy.
    Returns the ``History`` of ``fit``.
    """
    from helpers import losses

    classifier.compile(optimizer=optimizer, loss=losses.cross_entropy, metrics=losses.accuracy_metrics())
    return classifier.fit(train_data, validation_data=val_data, epochs=1, verbose=0, shuffle=False)


def _tiny_training_case(seed: int = 0, n_cells: int = 5, n_images: int = 48):
    """A small softmax classifier and a labelled pipeline like the workbook's: (model, train, val)."""
    import keras
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    size = 8
    images = rng.uniform(0, 255, (n_images, size, size, 3)).astype("float32")
    cells = rng.integers(0, n_cells, n_images)
    labels = np.column_stack(
        [cells, rng.uniform(54.6, 57.7, n_images), rng.uniform(8.1, 15.1, n_images)]
    ).astype("float32")
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((size, size, 3)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Flatten(),
            keras.layers.Dense(n_cells, activation="softmax"),
        ]
    )
    split = n_images * 2 // 3
    train = tf.data.Dataset.from_tensor_slices((images[:split], labels[:split])).batch(8)
    val = tf.data.Dataset.from_tensor_slices((images[split:], labels[split:])).batch(16)
    return model, train, val


_TRAINED_BY_THE_WORKBOOK: dict = {}  # the reference's history and weights by case: the same every run

_COLUMN_HINTS = {
    "loss": "compile with loss=losses.cross_entropy: it reads the cell from column 0 of the labels.",
    "accuracy": "compile with metrics=losses.accuracy_metrics(): Keras' own 'accuracy' misreads "
    "[cell, lat, lng] labels.",
    "top3": "compile with metrics=losses.accuracy_metrics(), which logs top-1 'accuracy' and top-3 'top3'.",
}


def check_training(
    train_one_epoch, *, hidden: bool = False, quiet: bool = False, seconds_per_case: float | None = None
) -> bool:
    """Notebook 06: ``train_one_epoch(classifier, train_data, val_data, optimizer)`` against
    :func:`train_one_epoch_reference`, on a small softmax classifier and a pipeline of
    (images 0-255, [cell, lat, lng] labels) batches like the workbook's.

    Both start from the same weights with a fresh AdamW. The history must hold one epoch and
    every column the workbook's does (loss, accuracy, top3 and their val_ twins) with the
    same values, and the trained weights must be the workbook's.
    """
    import keras

    def inputs(seed, n_cells, n_images):
        def build():
            model, train, val = _tiny_training_case(seed, n_cells, n_images)
            return model, train, val, keras.optimizers.AdamW(learning_rate=1e-2)

        return build

    cases = [
        _Case("a small softmax classifier, 4 batches of 8 images", inputs(0, 5, 48)),
        _Case("", inputs(1, 7, 60), hidden=True),
    ]

    def run(function, args):
        model = args[0]
        history = function(*args)
        if history is None:
            return None
        return history, [(weight.name, _numpy(weight)) for weight in model.weights]

    def compare(got, want, where):
        (history, weights), (reference, trained) = got, want.value
        label = where.label
        if not isinstance(history, keras.callbacks.History):
            raise _Differs(
                f"on {label}, your function returned {_type_name(history)}; "
                "expected what model.fit returns (a History).",
                "return the result of classifier.fit(...), not the model.",
            )
        logged = history.history if isinstance(history.history, dict) else {}
        epochs = len(logged.get("loss", []))
        if epochs != 1:
            raise _Differs(
                f"on {label}, the history holds {epochs} epochs; expected one.", "fit with epochs=1."
            )
        missing = [column for column in reference.history if column not in logged]
        if missing:
            hint = (
                "pass validation_data=val_data to fit."
                if all(column.startswith("val_") for column in missing)
                else _COLUMN_HINTS["top3"]
            )
            raise _Differs(f"on {label}, the history has no {', '.join(map(repr, missing))}.", hint)
        # the losses first: a wrong loss changes every other column too
        columns = sorted(reference.history, key=lambda name: (name.removeprefix("val_") != "loss", name))
        for column in columns:
            values, base = reference.history[column], column.removeprefix("val_")
            _compare(
                np.asarray(logged[column][:1], dtype="float64"),
                np.asarray(values, dtype="float64"),
                where,
                _Noun(f"the {column!r} column"),
                rtol=1e-4,
                atol=1e-5,
                hint=lambda _, base=base: _COLUMN_HINTS.get(base),
            )
        for (name, ours), (_, theirs) in zip(weights, trained, strict=True):
            _compare(
                ours,
                theirs,
                where,
                _Noun(f"the trained weights {name!r}", plural=True),
                rtol=1e-4,
                atol=1e-5,
                hint=lambda _: "train on train_data with the optimizer passed in, shuffle=False.",
            )

    return _grade(
        "compile and fit",
        train_one_epoch,
        cases,
        reference=train_one_epoch_reference,
        compare=compare,
        passed="the same loss, top-1 and top-3 accuracy and trained weights as the workbook's one epoch",
        hidden=hidden,
        quiet=quiet,
        seconds=seconds_per_case or TRAINING_SECONDS_PER_CASE,
        run=run,
        exact=False,
        numpy=False,
        remember=_TRAINED_BY_THE_WORKBOOK,
    )


# --- 07: the losses -------------------------------------------------------------------------------


def _loss_inputs(rng, n_cells: int = 6, batch: int = 5):
    """Cells (batch,), probabilities (batch, n_cells) and a normalised symmetric distance matrix."""
    points = rng.uniform(0, 1, (n_cells, 2))
    d = np.sqrt(((points[:, None] - points[None]) ** 2).sum(-1))
    d = (d / d.max()).astype("float32")
    logits = rng.normal(size=(batch, n_cells)) * 2
    probabilities = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype("float32")
    cells = rng.integers(0, n_cells, batch).astype("int32")
    return cells, probabilities, d


def _gradient(function, probabilities):
    """d sum(function(p)) / dp on the Keras backend (TensorFlow or JAX), or None if there is none."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        p = tf.constant(probabilities)
        with tf.GradientTape() as tape:
            tape.watch(p)
            total = tf.reduce_sum(function(p))
        gradient = tape.gradient(total, p)
        return None if gradient is None else gradient.numpy()
    if backend == "jax":
        import jax

        try:
            return np.asarray(jax.grad(lambda p: function(p).sum())(probabilities))
        except (TypeError, jax.errors.TracerArrayConversionError):  # NumPy inside: no gradient
            return None
    raise NotImplementedError(f"gradients are checked on TensorFlow or JAX, not {backend}")


def _value_and_gradient(function, args):
    """(loss per image, its gradient with respect to the probabilities), or None if the loss is None."""
    cells, probabilities, d = args
    value = function(cells, probabilities, d)
    if value is None:
        return None
    return value, _gradient(lambda p: function(_fresh(cells), p, _fresh(d)), _fresh(probabilities))


def _loss_check(title, answer, reference, cases, variants, passed, hidden, quiet, seconds) -> bool:
    """Values and gradients (with respect to the probabilities) of a loss against the reference.

    ``variants`` {hint: loss} are the usual mistakes, named when the answer's values are theirs."""

    def compare(got, want, where):
        value, gradient = got
        want_value, want_gradient = want.value
        value_slack, gradient_slack = want.slack
        cells, probabilities, d = where.case.args

        def hint(found):
            for text, mistake in variants.items():
                if _same(found, _numpy(mistake(cells, probabilities.astype("float64"), d.astype("float64")))):
                    return text
            return None

        shape_hint = "one value per image: sum over the cells (axis -1) only."
        _compare(
            value,
            want_value,
            where,
            _Noun("the loss per image"),
            rtol=1e-4,
            atol=1e-6,
            slack=value_slack,
            shape_hint=shape_hint,
            hint=hint,
        )
        if gradient is None:
            raise _Differs(
                f"on {where.label}, your loss has no gradient with respect to the probabilities.",
                "write it with keras.ops, not NumPy, so the model can learn from it.",
            )
        _compare(
            gradient,
            want_gradient,
            where,
            _Noun("the gradient"),
            rtol=1e-3,
            atol=1e-5,
            slack=gradient_slack,
            hint=lambda _: "the values are right but not their gradient: keep every step in keras.ops.",
        )

    return _grade(
        title,
        answer,
        cases,
        reference=reference,
        compare=compare,
        passed=passed,
        hidden=hidden,
        quiet=quiet,
        seconds=seconds,
        run=_value_and_gradient,
        exact=False,  # losses.normalised keeps d in float32, so the losses cannot run in float64
    )


def _eq_cases(rng):
    cells, probabilities, d = _loss_inputs(rng)
    sure = np.eye(6, dtype="float32")[[0, 3, 5]]  # all mass on one cell: right, and far off
    hidden_cells, hidden_probabilities, hidden_d = _loss_inputs(rng, n_cells=10, batch=8)
    return [
        _Case("1 image, 6 cells, random probabilities", (cells[:1], probabilities[:1], d)),
        _Case("3 images sure of one cell (two right, one wrong)", (np.array([0, 3, 1], "int32"), sure, d)),
        _Case("5 images, 6 cells, random probabilities", (cells, probabilities, d)),
        _Case("", (hidden_cells, hidden_probabilities, hidden_d), hidden=True),
        _Case("", (hidden_cells.astype("int64"), np.full((8, 10), 0.1, "float32"), hidden_d), hidden=True),
    ]


def _rows(d, cells):
    from keras import ops

    return ops.take(d, ops.cast(cells, "int32"), axis=0)


def check_eq1_loss(
    eq1_loss, *, hidden: bool = False, quiet: bool = False, seconds_per_case: float | None = None
) -> bool:
    """Notebook 07: ``eq1_loss(cells, probabilities, d)`` -> (batch,), the report's equation (1),
    against :func:`helpers.losses.expected_distance_squared`: values and gradients."""
    from keras import ops

    from helpers import losses

    def reference(cells, probabilities, d):
        return losses.expected_distance_squared(d)(cells, probabilities)

    variants = {
        "the square missing? Equation (1) squares the expected distance.": lambda c, p, d: ops.sum(
            p * _rows(d, c), axis=-1
        ),
        "squared inside the sum? Square the sum, (sum_i p_i d(i, t))².": lambda c, p, d: ops.sum(
            ops.square(p * _rows(d, c)), axis=-1
        ),
    }
    return _loss_check(
        "equation (1)",
        eq1_loss,
        reference,
        _eq_cases(np.random.default_rng(7)),
        variants,
        "the same loss and gradient as losses.expected_distance_squared",
        hidden,
        quiet,
        seconds_per_case or SECONDS_PER_CASE,
    )


def check_eq3_loss(
    eq3_loss, *, hidden: bool = False, quiet: bool = False, seconds_per_case: float | None = None
) -> bool:
    """Notebook 07: ``eq3_loss(cells, probabilities, d)`` -> (batch,), the report's equation (3),
    against :func:`helpers.losses.log_distance`: values and gradients, a probability of 1 included."""
    from keras import ops

    from helpers import losses

    def reference(cells, probabilities, d):
        return losses.log_distance(d)(cells, probabilities)

    variants = {
        "log p instead of log(1 - p)?": lambda c, p, d: ops.sum(
            -ops.log(ops.clip(p, losses.EPSILON, 1.0)) * _rows(d, c), axis=-1
        ),
        "the minus sign missing? -log(1 - p) is positive.": lambda c, p, d: ops.sum(
            ops.log(ops.clip(1.0 - p, losses.EPSILON, 1.0)) * _rows(d, c), axis=-1
        ),
        "1 - p = 0 gives log 0: clip 1 - p to [losses.EPSILON, 1].": lambda c, p, d: ops.sum(
            -ops.log(1.0 - p) * _rows(d, c), axis=-1
        ),
    }
    return _loss_check(
        "equation (3)",
        eq3_loss,
        reference,
        _eq_cases(np.random.default_rng(8)),
        variants,
        "the same loss and gradient as losses.log_distance, a probability of 1 included",
        hidden,
        quiet,
        seconds_per_case or SECONDS_PER_CASE,
    )


def _exact_targets(latlng, centroids, tau):
    """PIGEON's targets in float64 (geo.haversine_km), to compare float64 answers with."""
    from helpers import geo

    latlng, centroids = np.asarray(latlng, dtype="float64"), np.asarray(centroids, dtype="float64")
    lat, lng = latlng[:, None, 0], latlng[:, None, 1]  # (batch, 1): against every centroid
    km = geo.haversine_km(lat, lng, centroids[None, :, 0], centroids[None, :, 1])
    return np.exp(-(km - km.min(axis=-1, keepdims=True)) / tau)


def check_smoothed_targets(
    smoothed_targets, *, hidden: bool = False, quiet: bool = False, seconds_per_case: float | None = None
) -> bool:
    """Notebook 07: ``smoothed_targets(latlng, centroids, tau_km)`` -> (batch, n_cells) against
    :func:`helpers.losses.haversine_targets` (PIGEON's targets, not renormalised).

    Inputs, simple to hard: one image on a centroid, images at random places in Denmark,
    and three values of tau. Each call gets its own copy of ``centroids``.
    """
    from helpers import losses

    rng = np.random.default_rng(9)
    centroids = np.column_stack([rng.uniform(54.7, 57.6, 8), rng.uniform(8.2, 15.0, 8)]).astype("float32")
    places = np.column_stack([rng.uniform(54.7, 57.6, 4), rng.uniform(8.2, 15.0, 4)]).astype("float32")
    more = np.column_stack([rng.uniform(54.7, 57.6, 20), rng.uniform(8.2, 15.0, 20)]).astype("float32")
    cases = [
        _Case("one image on a centroid, 8 cells, tau 200 km", (centroids[2:3].copy(), centroids, 200.0)),
        _Case("4 images, 8 cells, tau 75 km", (places, centroids, 75.0)),
        _Case("the same images, tau 15 km", (places, centroids, 15.0)),
        _Case("", (more[:6], more[6:], 65.0), hidden=True),
        _Case("", (more[6:], places, 1000.0), hidden=True),
    ]

    def reference(latlng, centroids, tau):
        labels = np.column_stack([np.zeros(len(latlng)), latlng]).astype("float32")
        return losses.haversine_targets(labels, centroids, tau)

    def compare(got, want, where):
        latlng, centroids, tau = where.case.args

        def hint(targets):
            if _same(targets, _exact_targets(latlng, centroids, 1.0 / tau)):
                return "tau multiplied? Divide the extra distance by tau_km."
            if np.allclose(targets, 1.0) and not np.allclose(want.value, 1.0):
                return "every target is 1: each image subtracts its own smallest distance (axis -1)."
            sums_to_one = np.allclose(targets.sum(axis=-1), 1.0, atol=1e-4)
            if sums_to_one and not np.allclose(want.value.sum(axis=-1), 1.0):
                return "rows renormalised? PIGEON's targets are not: the nearest cell gets 1."
            if not np.allclose(targets.max(axis=-1), 1.0, atol=1e-4):
                return (
                    "the nearest cell of each image gets 1: subtract each image's own smallest "
                    "distance (axis -1)."
                )
            return None

        _compare(
            got,
            want.value,
            where,
            _Noun("the targets", plural=True),
            rtol=1e-4,
            atol=1e-5,
            slack=want.slack,
            shape_hint="one row per image, one column per cell: (batch, n_cells).",
            hint=hint,
        )

    return _grade(
        "PIGEON's smoothed targets",
        smoothed_targets,
        cases,
        reference=reference,
        compare=compare,
        passed="the same targets as losses.haversine_targets",
        hidden=hidden,
        quiet=quiet,
        seconds=seconds_per_case or SECONDS_PER_CASE,
        exact=_exact_targets,
    )


# --- 09: attention rollout -------------------------------------------------------------------------


def random_attention(rng, images: int, layers: int, heads: int, tokens: int) -> np.ndarray:
    """Random attention weights (images, layers, heads, tokens, tokens), each row summing to 1."""
    logits = rng.normal(size=(images, layers, heads, tokens, tokens)) * 2
    weights = np.exp(logits)
    return (weights / weights.sum(-1, keepdims=True)).astype("float32")


def _rollout_variants(scores) -> dict:
    """{hint: grids} of the usual rollout mistakes, in float64."""
    mean = np.asarray(scores, dtype="float64").mean(axis=2)
    tokens, layers = mean.shape[-1], mean.shape[1]
    side = int(round(np.sqrt(tokens - 1)))
    eye = np.eye(tokens)

    def roll(residual=True, left=True, column=False, only_last=False):
        joint = np.broadcast_to(eye, (mean.shape[0], tokens, tokens))
        for layer in [layers - 1] if only_last else range(layers):
            mixed = 0.5 * mean[:, layer] + 0.5 * eye if residual else mean[:, layer]
            mixed = mixed / mixed.sum(axis=-1, keepdims=True)
            joint = mixed @ joint if left else joint @ mixed
        patches = joint[:, 1:, 0] if column else joint[:, 0, 1:]
        return patches.reshape(-1, side, side)

    return {
        "the residual missing? Add the identity to each layer's mean attention, then renormalise "
        "the rows.": roll(residual=False),
        "the class token's column? Read its row: what it takes from each patch.": roll(column=True),
        "layers multiplied in the wrong order? The later layer goes on the left.": roll(left=False),
        "only the last layer? Multiply all of them together.": roll(only_last=True),
    }


def check_rollout(
    rollout, *, hidden: bool = False, quiet: bool = False, seconds_per_case: float | None = None
) -> bool:
    """Notebook 09: ``rollout(scores)`` -> grids (images, rows, columns) against
    :func:`helpers.attention.rollout`.

    scores: (images, layers, heads, T+1, T+1) float32. Inputs, simple to hard: attention
    that looks only at itself (rollout stays on the class token), one layer of one and of two
    heads, then two and three layers.
    """
    from helpers import attention

    rng = np.random.default_rng(10)
    identity = np.broadcast_to(np.eye(5, dtype="float32"), (1, 1, 1, 5, 5)).copy()
    inputs = [  # name, scores, hidden
        ("every token attending only to itself (1 layer, a 2 x 2 grid)", identity, False),
        ("1 image, 1 layer, 1 head, a 2 x 2 grid", random_attention(rng, 1, 1, 1, 5), False),
        ("1 image, 1 layer, 2 heads, a 2 x 2 grid", random_attention(rng, 1, 1, 2, 5), False),
        ("3 images, 2 layers, 1 head, a 3 x 3 grid", random_attention(rng, 3, 2, 1, 10), False),
        ("2 images, 3 layers, 4 heads, a 4 x 4 grid", random_attention(rng, 2, 3, 4, 17), False),
        ("", random_attention(rng, 2, 4, 3, 26), True),
        ("", random_attention(rng, 1, 6, 2, 10), True),
    ]
    cases = [
        _Case(name, (scores,), hidden, facts={"layers": scores.shape[1]}) for name, scores, hidden in inputs
    ]

    def compare(got, want, where):
        (scores,) = where.case.args

        def hint(grids):
            for text, variant in _rollout_variants(scores).items():
                if _same(grids, variant):
                    return text
            one_layer = [case for case in where.passed if case.facts["layers"] == 1]
            if one_layer and where.case.facts["layers"] > 1:
                return (
                    f"passes with one layer but not with {where.case.facts['layers']}: "
                    "multiply every layer's matrix, the later one on the left."
                )
            return None

        _compare(
            got,
            want.value,
            where,
            _Noun("the rollout grids", plural=True),
            rtol=1e-4,
            atol=1e-6,
            slack=want.slack,
            shape_hint="one √T x √T grid of patches per image, the class token left out: "
            "(images, rows, columns).",
            hint=hint,
        )

    return _grade(
        "attention rollout",
        rollout,
        cases,
        reference=attention.rollout,
        compare=compare,
        passed="the same grids as attention.rollout, with one layer and with several",
        hidden=hidden,
        quiet=quiet,
        seconds=seconds_per_case or SECONDS_PER_CASE,
    )
