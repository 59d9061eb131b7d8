"""Task options, the advertised signature, and binding arguments to it without calling anything.

A worker turns each decorated function into a *spec* (name, queue, parameters, options) and
advertises it; the manager binds every submit's arguments against the spec's parameters with
``check_arguments``, and checks their values against the annotations with ``check_types``,
before anything is queued, so a bad call fails at once with a message like Python's own.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .argtypes import check_value, schema_for
from .errors import ConfigurationError, InvalidArguments, ProtocolError, SerializationError
from .protocol.frames import MAX_DEPTH, is_plain

RETRY_POLICIES = {
    "retry_once": "retry_once",
    "never": "never",
    "retry_always": "retry_always",
    "always": "retry_always",
}
"""Accepted spellings -> canonical policy (the original docs use both ``always`` forms)."""

_KINDS = {
    inspect.Parameter.POSITIONAL_ONLY: "positional_only",
    inspect.Parameter.POSITIONAL_OR_KEYWORD: "positional_or_keyword",
    inspect.Parameter.VAR_POSITIONAL: "var_positional",
    inspect.Parameter.KEYWORD_ONLY: "keyword_only",
    inspect.Parameter.VAR_KEYWORD: "var_keyword",
}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,199}$")


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter of a task, as advertised."""

    name: str
    kind: str
    has_default: bool = False
    default: Any = None
    annotation: str | None = None

    def schema(self) -> dict[str, Any]:
        """The JSON Schema of this parameter's values; a default of None also admits None, as
        ``def f(x: int = None)`` has long meant. (Shared: do not change it.)"""
        return _schema(self.annotation, self.has_default and self.default is None)

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind,
                               "has_default": self.has_default, "annotation": self.annotation}
        if self.has_default and is_plain(self.default, MAX_DEPTH - 4):
            out["default"] = self.default
        return out


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """The options of the original ``task()`` decorator, validated."""

    on_failure: str | None = None
    retry_policy: str = "retry_once"
    run_before: tuple[str, ...] = ()
    run_after: tuple[str, ...] = ()
    subprocess: bool = False
    schedule: str | None = None
    default_args: dict[str, Any] | None = None
    timeout: float | None = None
    timezone: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return {
            "on_failure": self.on_failure,
            "retry_policy": self.retry_policy,
            "run_before": list(self.run_before),
            "run_after": list(self.run_after),
            "subprocess": self.subprocess,
            "schedule": self.schedule,
            "default_args": self.default_args,
            "timeout": self.timeout,
            "timezone": self.timezone,
        }


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """What a worker advertises about one task, and what the manager checks calls against."""

    name: str
    queue: str
    params: tuple[Param, ...]
    options: TaskOptions = field(default_factory=TaskOptions)

    def to_wire(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "queue": self.queue,
            "params": [p.to_wire() for p in self.params],
            "options": self.options.to_wire(),
        }

    def check(self, args: list[Any] | tuple[Any, ...], kwargs: Iterable[str]) -> None:
        """Raise ``InvalidArguments`` unless the arguments bind to this task's parameters."""
        check_arguments(self.name, self.params, len(args), kwargs)

    def check_types(self, args: list[Any] | tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        """Raise ``InvalidArguments`` unless each argument matches its parameter's annotation;
        for arguments that ``check`` has bound."""
        check_types(self.name, self.params, args, kwargs)


@functools.lru_cache(maxsize=4096)
def _schema(annotation: str | None, none_default: bool) -> dict[str, Any]:
    """``Param.schema``, parsed once per annotation: every submit checks its arguments."""
    schema = schema_for(annotation)
    if none_default and check_value(schema, None, "") is not None:
        return {"anyOf": [schema, {"type": "null"}]}
    return schema


def check_name(value: str, what: str) -> str:
    """A task or queue name: an identifier-like string (letters, digits, ``_ . -``)."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise ConfigurationError(
            f"{what} must start with a letter or _ and hold only letters, digits, _ . -"
            f" (at most 200 characters), not {value!r}"
        )
    return value


def make_options(
    *,
    on_failure: str | None = None,
    retry_policy: str | None = "retry_once",
    run_before: Iterable[str] | None = None,
    run_after: Iterable[str] | None = None,
    subprocess: bool | None = False,
    schedule: str | None = None,
    default_args: dict[str, Any] | None = None,
    timeout: float | None = None,
    timezone: str | None = None,
) -> TaskOptions:
    """Validate the decorator's options; ``ConfigurationError`` names the bad one."""
    policy = RETRY_POLICIES.get(retry_policy or "retry_once")
    if policy is None:
        raise ConfigurationError(
            f"retry_policy must be one of {sorted(RETRY_POLICIES)}, not {retry_policy!r}"
        )
    if on_failure is not None:
        check_name(on_failure, "on_failure")
    before = _names(run_before, "run_before")
    after = _names(run_after, "run_after")
    if schedule is not None:
        _check_cron(schedule)
    if timezone is not None:
        _check_timezone(timezone)
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0
    ):
        raise ConfigurationError(f"timeout must be a positive number of seconds, not {timeout!r}")
    return TaskOptions(
        on_failure=on_failure,
        retry_policy=policy,
        run_before=before,
        run_after=after,
        subprocess=bool(subprocess),
        schedule=schedule,
        default_args=_check_default_args(default_args),
        timeout=float(timeout) if timeout is not None else None,
        timezone=timezone,
    )


def _names(values: Iterable[str] | None, what: str) -> tuple[str, ...]:
    if values is None:
        return ()
    if isinstance(values, str):
        raise ConfigurationError(f"{what} must be a list of task names, not a string")
    names = tuple(check_name(v, f"each {what} entry") for v in values)
    if len(set(names)) != len(names):
        raise ConfigurationError(f"{what} names a task twice: {list(names)}")
    return names


def _check_cron(schedule: str) -> None:
    from croniter import croniter  # imported here: only decoration with schedule= needs it

    if not isinstance(schedule, str) or not croniter.is_valid(schedule):
        raise ConfigurationError(
            f"schedule {schedule!r} is not a valid cron expression: write 5 fields (minute "
            "hour day-of-month month day-of-week, e.g. '*/5 * * * *'), or 6 with seconds last")


def _check_timezone(timezone: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ConfigurationError(f"unknown timezone {timezone!r}") from None


def _check_default_args(default_args: dict[str, Any] | None) -> dict[str, Any] | None:
    if default_args is None:
        return None
    if not isinstance(default_args, dict) or set(default_args) - {"args", "kwargs"}:
        raise ConfigurationError(
            "default_args must be a dict with the keys 'args' (a list) and/or 'kwargs' (a dict)"
        )
    args = default_args.get("args", [])
    kwargs = default_args.get("kwargs", {})
    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict) or not all(
        isinstance(k, str) for k in kwargs
    ):
        raise ConfigurationError(
            "default_args['args'] must be a list and default_args['kwargs'] a dict with str keys"
        )
    if not is_plain([args, kwargs], MAX_DEPTH - 4):
        raise SerializationError("default_args must hold only msgpack-serializable values")
    return {"args": list(args), "kwargs": dict(kwargs)}


def describe(fn: Callable[..., Any]) -> tuple[Param, ...]:
    """The parameters of ``fn`` as they will be advertised."""
    params = []
    for p in inspect.signature(fn).parameters.values():
        has_default = p.default is not inspect.Parameter.empty
        annotation = None
        if p.annotation is not inspect.Parameter.empty:
            annotation = (
                p.annotation if isinstance(p.annotation, str)
                else inspect.formatannotation(p.annotation)
            )
        params.append(Param(p.name, _KINDS[p.kind], has_default,
                            p.default if has_default else None, annotation))
    return tuple(params)


def spec_for(fn: Callable[..., Any], queue: str, options: TaskOptions) -> TaskSpec:
    """The spec of a decorated function (``async def`` or ``def``); ``ConfigurationError`` if
    it cannot be a task."""
    name = getattr(fn, "__name__", fn)
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        raise ConfigurationError(f"task {name!r} is a generator function: a task must return "
                                 "its result, not yield it")
    if not (inspect.iscoroutinefunction(fn) or inspect.isfunction(fn) or inspect.ismethod(fn)):
        raise ConfigurationError(f"task {name!r} must be a function (def or async def), "
                                 f"not {type(fn).__name__}")
    spec = TaskSpec(check_name(fn.__name__, "task name"), queue, describe(fn), options)
    if options.schedule is not None:
        # A schedule fires with default_args, or with no arguments when there are none.
        default_args = options.default_args or {"args": [], "kwargs": {}}
        try:
            spec.check(default_args["args"], default_args["kwargs"])
        except InvalidArguments as exc:
            raise ConfigurationError(
                f"default_args of scheduled task {spec.name} do not bind: {exc}"
            ) from None
    return spec


def check_arguments(
    task: str, params: Iterable[Param], n_args: int, kwargs: Iterable[str]
) -> None:
    """Bind ``n_args`` positional arguments and the ``kwargs`` names as Python would.

    Raises ``InvalidArguments`` with Python's wording, prefixed by the task name.
    """
    positional: list[Param] = []
    by_name: dict[str, Param] = {}
    var_positional = var_keyword = False
    for p in params:
        if p.kind in ("positional_only", "positional_or_keyword"):
            positional.append(p)
        if p.kind == "var_positional":
            var_positional = True
        elif p.kind == "var_keyword":
            var_keyword = True
        elif p.kind != "positional_only":
            by_name[p.name] = p
    if n_args > len(positional) and not var_positional:
        raise InvalidArguments(
            f"{task}() takes {len(positional)} positional argument"
            f"{'s' if len(positional) != 1 else ''} but {n_args} were given"
        )
    bound = {p.name for p in positional[:n_args]}
    for name in kwargs:
        if name in bound and name in by_name:
            raise InvalidArguments(f"{task}() got multiple values for argument {name!r}")
        if name not in by_name:
            if var_keyword:
                continue
            raise InvalidArguments(f"{task}() got an unexpected keyword argument {name!r}")
        bound.add(name)
    missing = [
        p.name for p in (*positional, *by_name.values())
        if not p.has_default and p.name not in bound
    ]
    if missing:
        names = ", ".join(repr(m) for m in dict.fromkeys(missing))
        raise InvalidArguments(
            f"{task}() missing {len(set(missing))} required argument"
            f"{'s' if len(set(missing)) != 1 else ''}: {names}"
        )


def check_types(
    task: str, params: Iterable[Param], args: list[Any] | tuple[Any, ...],
    kwargs: Mapping[str, Any],
) -> None:
    """Check each bound argument against its parameter's ``schema`` (``*args`` and ``**kwargs``
    against theirs, item by item); ``InvalidArguments`` names the first one that does not fit.
    """
    params = tuple(params)
    positional = [p for p in params if p.kind in ("positional_only", "positional_or_keyword")]
    by_name = {p.name: p for p in params
               if p.kind in ("positional_or_keyword", "keyword_only")}
    rest = next((p for p in params if p.kind == "var_positional"), None)
    extra = next((p for p in params if p.kind == "var_keyword"), None)
    checks: list[tuple[Param, Any, str]] = [
        (p, value, f"argument {p.name!r}") for p, value in zip(positional, args, strict=False)
    ]
    if rest is not None:
        checks += [(rest, value, f"argument {rest.name!r}[{i}]")
                   for i, value in enumerate(args[len(positional):])]
    for name, value in kwargs.items():
        param = by_name.get(name, extra)
        if param is not None:
            checks.append((param, value, f"argument {name!r}"))
    for param, value, where in checks:
        problem = check_value(param.schema(), value, where)
        if problem:
            raise InvalidArguments(f"{task}() {problem}")


def spec_from_wire(data: dict[str, Any]) -> TaskSpec:
    """Validate an advertised task spec (from a ``register`` frame); ``ProtocolError`` if bad."""
    try:
        params = tuple(
            Param(
                name=str(p["name"]),
                kind=p["kind"] if p["kind"] in _KINDS.values() else _bad(f"kind {p['kind']!r}"),
                has_default=bool(p.get("has_default", False)),
                default=p.get("default"),
                annotation=p.get("annotation") if isinstance(p.get("annotation"), str) else None,
            )
            for p in data["params"]
        )
        options = data.get("options") or {}
        spec = TaskSpec(
            name=check_name(data["name"], "task name"),
            queue=check_name(data["queue"], "queue name"),
            params=params,
            options=make_options(
                on_failure=options.get("on_failure"),
                retry_policy=options.get("retry_policy"),
                run_before=options.get("run_before"),
                run_after=options.get("run_after"),
                subprocess=options.get("subprocess"),
                schedule=options.get("schedule"),
                default_args=options.get("default_args"),
                timeout=options.get("timeout"),
                timezone=options.get("timezone"),
            ),
        )
    except (KeyError, TypeError, AttributeError, ConfigurationError, SerializationError) as exc:
        raise ProtocolError(f"register: invalid task spec: {exc}") from None
    return spec


def _bad(what: str) -> Any:
    raise ProtocolError(f"register: invalid task spec: {what}")


def find_cycle(specs: Mapping[tuple[str, str], TaskSpec]) -> list[str] | None:
    """A run_before cycle among the specs of one manager, as task names, or None."""
    state: dict[tuple[str, str], int] = {}  # 1 = on the current path, 2 = done

    def visit(key: tuple[str, str], path: list[str]) -> list[str] | None:
        if state.get(key) == 1:
            return [*path[path.index(key[1]):], key[1]]
        if state.get(key) == 2 or key not in specs:
            return None
        state[key] = 1
        for dep in specs[key].options.run_before:
            cycle = visit((key[0], dep), [*path, key[1]])
            if cycle:
                return cycle
        state[key] = 2
        return None

    for key in specs:
        cycle = visit(key, [])
        if cycle:
            return cycle
    return None
