"""Workload registry in the manner of timm: ``@register_workload`` on a factory, ``create_workload(name)`` to build.

A *workload* is a named, parameterised thing to run: an ``nn.Module`` factory plus the input shape it takes.
Blocks and full networks are registered here; user models and ``.onnx`` files are resolved by ``user_models``.

Keyword arguments are typed by the factory's signature wherever they meet a factory (``coerce_kwargs``): the text
of ``--arg shortcut=false`` becomes ``False`` because the parameter is annotated ``bool`` (or defaults to a bool),
and a value that cannot be converted is a one-line error naming the argument, the expected type and the value.
"""

from __future__ import annotations

import ast
import collections.abc
import enum
import inspect
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Union

import torch
from torch import nn

from latprof.errors import LatprofError, one_line, unknown_choice
from latprof.shapes import Shape, check_rank, format_shape, shape_text, with_batch

KINDS = ("block", "network")

InputFn = Callable[[dict[str, Any]], Shape]


@dataclass(frozen=True)
class WorkloadSpec:
    """One registry entry: how to build a workload and what input it takes by default."""

    name: str
    kind: str
    factory: Callable[..., nn.Module]
    default_input: Shape | InputFn
    description: str
    family: str = ""

    def input_for(self, kwargs: dict[str, Any]) -> Shape:
        """The default input shape (batch 1) for these keyword arguments."""
        if callable(self.default_input):
            return tuple(self.default_input(kwargs))
        return tuple(self.default_input)

    def arguments(self) -> dict[str, Any]:
        """Documented keyword arguments of the factory with their defaults."""
        out: dict[str, Any] = {}
        for p in inspect.signature(self.factory).parameters.values():
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
                out[p.name] = None if p.default is inspect.Parameter.empty else p.default
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "family": self.family,
            "description": self.description,
            "default_input": format_shape(self.input_for({})),
            "arguments": {k: v for k, v in self.arguments().items() if _jsonable(v)},
        }


_REGISTRY: dict[str, WorkloadSpec] = {}


def _jsonable(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str, list, tuple))


def register_workload(
    *, kind: str, default_input: Shape | InputFn, family: str = "", name: str | None = None
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a factory; its name defaults to the function name, its description to the docstring's first line."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")

    def decorate(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or factory.__name__
        if key in _REGISTRY:
            raise ValueError(f"workload {key!r} registered twice")
        doc = (inspect.getdoc(factory) or "").strip().splitlines()
        _REGISTRY[key] = WorkloadSpec(key, kind, factory, default_input, doc[0] if doc else "", family)
        return factory

    return decorate


IMAGE_INPUT: Shape = (1, 3, 224, 224)


def register_networks(family: str, build: Callable[..., nn.Module], variants: dict[str, tuple[Any, ...]],
                      resolutions: dict[str, int] | None = None) -> None:
    """Register one network factory per variant of ``build``: ``{name: (description, *args)}`` registers
    ``name(num_classes: int = 1000)``, which returns ``build(*args, num_classes=num_classes)`` for a 1×3×224×224
    input, or 1×3×r×r where ``resolutions`` gives the network's own r (EfficientNet-B1: 240). Each factory is also
    bound under its name in ``build``'s module (``module:name`` references keep working).
    """
    for name, (description, *args) in variants.items():
        factory = _network_factory(build, tuple(args))
        factory.__name__ = factory.__qualname__ = name
        factory.__module__, factory.__doc__ = build.__module__, description
        r = (resolutions or {}).get(name)
        default_input = (1, 3, r, r) if r else IMAGE_INPUT
        register_workload(kind="network", family=family, default_input=default_input)(factory)
        setattr(sys.modules[build.__module__], name, factory)


def _network_factory(build: Callable[..., nn.Module], args: tuple[Any, ...]) -> Callable[..., nn.Module]:
    def factory(num_classes: int = 1000) -> nn.Module:
        return build(*args, num_classes=num_classes)

    return factory


def list_workloads(kind: str | None = None) -> list[WorkloadSpec]:
    specs = sorted(_REGISTRY.values(), key=lambda s: (s.kind, s.family, s.name))
    return [s for s in specs if kind is None or s.kind == kind]


def get_spec(name: str) -> WorkloadSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise unknown_choice("model", name, _REGISTRY) from None


@dataclass
class BlockInstance:
    """One block of a network, in order: its name, the module, and the input shape it sees inside the network."""

    name: str
    module: nn.Module
    input_shape: Shape


@dataclass
class Workload:
    """A built workload: module in eval mode, its input shape (with batch), and how it was made."""

    name: str
    module: nn.Module | None
    input_shape: Shape
    kind: str = "block"
    kwargs: dict[str, Any] = field(default_factory=dict)
    source: str = "registry"
    onnx_path: str | None = None
    description: str = ""
    _reference: torch.Tensor | None = field(default=None, repr=False)
    # ``--input`` as the user typed it (None when the shape is the model's default): errors quote it
    input_text: str | None = None
    # where the module came from beyond name/source/kwargs (a user file's content hash, a package version): part of
    # the ONNX export cache key
    origin: dict[str, Any] = field(default_factory=dict)

    @property
    def batch(self) -> int:
        return int(self.input_shape[0])

    def make_inputs(self, seed: int = 0, device: str | torch.device = "cpu") -> tuple[torch.Tensor, ...]:
        """Inputs drawn from a fixed seed so every backend and every run sees the same data."""
        gen = torch.Generator().manual_seed(seed)
        return (torch.randn(self.input_shape, generator=gen).to(device),)

    def reference_output(self) -> torch.Tensor:
        """PyTorch eager output on CPU, computed once; every backend's output is checked against it."""
        if self._reference is None:
            if self.module is None:
                raise LatprofError(f"{self.name}: an ONNX file has no PyTorch reference output")
            with torch.inference_mode():
                out = self.module(*self.make_inputs())
            self._reference = first_tensor(out).detach().clone()
        return self._reference

    def check_input(self) -> None:
        """Run eager once; an input the model rejects is a one-line error quoting the model and the shape tried."""
        if self.module is None:
            return
        try:
            self.reference_output()
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            raise LatprofError(f"{self.input_description()}: {one_line(exc)}") from None

    def input_description(self) -> str:
        """``NAME rejects input 1x5x64x64`` quoting ``--input`` as the user typed it (else the default shape tried),
        with the shape actually run when it differs from the typed one."""
        tried = format_shape(self.input_shape)
        if self.input_text is None:
            return f"{self.name} rejects input {tried}"
        ran = "" if self.input_text == tried else f" (run as {tried})"
        return f"{self.name} rejects input {self.input_text}{ran}"

    def blocks(self) -> list[BlockInstance]:
        """The network's blocks in order with the input shape each sees (networks define ``blocks()``)."""
        if self.module is None or not hasattr(self.module, "blocks"):
            raise LatprofError(f"{self.name} is not a network with a block decomposition; --per-block needs a zoo network")
        named: list[tuple[str, nn.Module]] = list(self.module.blocks())
        shapes: dict[str, Shape] = {}
        hooks = [
            m.register_forward_pre_hook(lambda _m, args, _n=n: shapes.setdefault(_n, tuple(args[0].shape)) and None)
            for n, m in named
        ]
        try:
            with torch.inference_mode():
                self.module(*self.make_inputs())
        finally:
            for h in hooks:
                h.remove()
        return [BlockInstance(n, m, shapes[n]) for n, m in named if n in shapes]


def first_tensor(out: Any) -> torch.Tensor:
    """The first tensor of a model output (tensor, tuple/list, or dict)."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (list, tuple)) and out:
        return first_tensor(out[0])
    if isinstance(out, dict) and out:
        return first_tensor(next(iter(out.values())))
    raise LatprofError(f"model output of type {type(out).__name__} holds no tensor")


class ArgText(str):
    """The text of one ``--arg KEY=VALUE`` value, typed later by the factory's signature (``coerce_kwargs``)."""


def parse_kwargs(pairs: list[str] | None) -> dict[str, Any]:
    """``["out_channels=64", "act=relu6"]`` → ``{name: ArgText}``: the text as typed, not yet converted.

    The factory's signature types each value when the workload is built (``coerce_kwargs``); where the signature
    says nothing about a parameter, the text is read as a Python literal and bare words stay strings.
    """
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise LatprofError(f"malformed --arg {pair!r}; expected KEY=VALUE, e.g. out_channels=64")
        out[key] = ArgText(value.strip())
    return out


# ------------------------------------------------------------------ typing keyword arguments by signature
TRUE_WORDS = frozenset({"true", "yes", "on", "1"})
FALSE_WORDS = frozenset({"false", "no", "off", "0"})
NONE_WORDS = frozenset({"none", "null"})
_UNKNOWN = object()  # the signature says nothing about a parameter's type


class _Mismatch(Exception):
    """The value does not convert to the parameter's type; the message says what was expected."""


def _literal(value: Any) -> Any:
    """Untyped parameter: text as a Python literal (bare words stay strings); other values as they are."""
    if not isinstance(value, str):
        return value
    try:
        return ast.literal_eval(str(value))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return str(value)


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def describe_type(tp: Any) -> str:
    """How an error names what it expected: ``a boolean (true/false/yes/no/1/0)``, ``an integer or none``, ..."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is bool:
        return "a boolean (true/false/yes/no/1/0)"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if _is_union(tp):
        members = [a for a in args if a is not type(None)]
        optional = len(members) < len(args)
        if int in members and float in members:  # "a number" covers both
            members = [a for a in members if a is not int]
        text = " or ".join(dict.fromkeys(describe_type(a) for a in members))
        return f"{text} or none" if optional else text
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(m.name for m in tp)
    if _sequence_origin(tp) is not None:
        elem, fixed = _sequence_elements(tp)
        noun = {int: "integers", float: "numbers", str: "strings", bool: "booleans"}.get(elem, "values")
        sample = {int: "3", float: "0.5", str: "a", bool: "true"}.get(elem)
        if fixed:
            return f"{fixed} {noun}, e.g. {','.join([sample] * fixed)}" if sample else f"{fixed} {noun}"
        return f"a comma-separated list of {noun}, e.g. {sample},{sample}" if sample else f"a list of {noun}"
    return getattr(tp, "__name__", str(tp))


def _sequence_origin(tp: Any) -> type | None:
    """``tuple`` or ``list`` for sequence annotations (``tuple[int, ...]``, ``list[int]``, ``Sequence[int]``)."""
    origin = typing.get_origin(tp) or tp
    if origin is tuple:
        return tuple
    if origin is list:
        return list
    if origin in (collections.abc.Sequence, typing.Sequence):
        return tuple
    return None


def _sequence_elements(tp: Any) -> tuple[Any, int | None]:
    """Element type and fixed length (None: any length) of a sequence annotation."""
    args = typing.get_args(tp)
    if not args:
        return _UNKNOWN, None
    if _sequence_origin(tp) is tuple and typing.get_origin(tp) is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return args[0], None
        if len(set(args)) == 1:
            return args[0], len(args)
        return _UNKNOWN, len(args)
    return args[0], None


def _coerce(value: Any, tp: Any) -> Any:
    """``value`` (text or a typed value) converted to ``tp``; ``_Mismatch`` when it cannot be.

    Text for an unknown type (no annotation, no typed default, ``**kwargs``) is read as a Python literal, as
    ``--arg`` always did.
    """
    text = value if isinstance(value, str) else None
    word = text.strip().lower() if text is not None else None
    if tp is _UNKNOWN or tp is Any or tp is inspect.Parameter.empty:
        return _literal(value)
    if tp is type(None) or tp is None:
        if value is None or word in NONE_WORDS:
            return None
        raise _Mismatch("none")
    if _is_union(tp):
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(members) < len(typing.get_args(tp)) and (value is None or word in NONE_WORDS):
            return None
        for member in members:
            try:
                return _coerce(value, member)
            except _Mismatch:
                continue
        raise _Mismatch(describe_type(tp))
    if typing.get_origin(tp) is Literal:
        choices = typing.get_args(tp)
        for choice in choices:
            if value == choice or (text is not None and str(choice) == _unquote(text)):
                return choice
        raise _Mismatch(describe_type(tp))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise _Mismatch(describe_type(tp))
    if tp is int:
        if isinstance(value, bool):
            raise _Mismatch(describe_type(tp))
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if text is not None:
            try:
                return int(text.strip())
            except ValueError:
                try:
                    number = float(text.strip())
                except ValueError:
                    number = None
                if number is not None and number.is_integer():
                    return int(number)
        raise _Mismatch(describe_type(tp))
    if tp is float:
        if isinstance(value, bool):
            raise _Mismatch(describe_type(tp))
        if isinstance(value, (int, float)):
            return float(value)
        if text is not None:
            try:
                return float(text.strip())
            except ValueError:
                pass
        raise _Mismatch(describe_type(tp))
    if tp is str:
        if text is not None:
            return _unquote(text)
        raise _Mismatch(describe_type(tp))
    container = _sequence_origin(tp)
    if container is not None:
        elem, fixed = _sequence_elements(tp)
        if text is not None:
            inner = text.strip()
            if len(inner) >= 2 and inner[0] + inner[-1] in ("()", "[]"):
                inner = inner[1:-1]
            items: list[Any] = [ArgText(p.strip()) for p in inner.split(",")]
            if items and items[-1] == "":  # "3," is a one-element tuple
                items.pop()
            if not inner.strip():
                items = []
        elif isinstance(value, (list, tuple)):
            items = list(value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            items = [value]
        else:
            raise _Mismatch(describe_type(tp))
        if fixed is not None and len(items) != fixed:
            raise _Mismatch(describe_type(tp))
        try:
            return container(_coerce(item, elem) for item in items)
        except _Mismatch:
            raise _Mismatch(describe_type(tp)) from None
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(value, tp):
            return value
        for member in tp:
            if text is not None and _unquote(text).lower() in (member.name.lower(), str(member.value).lower()):
                return member
            if text is None and value == member.value:
                return member
        raise _Mismatch(describe_type(tp))
    return _literal(value)  # a type this does not convert (a class, a callable): as before, a Python literal


def _unquote(text: str) -> str:
    """``'relu6'`` and ``"relu6"`` typed with quotes mean the string inside."""
    t = str(text).strip()
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "'\"":
        try:
            value = ast.literal_eval(t)
        except (ValueError, SyntaxError):
            return t
        return value if isinstance(value, str) else t
    return t


_ANNOTATION_NAMES: dict[str, Any] = {
    **{n: getattr(typing, n) for n in ("Any", "Optional", "Union", "Literal", "Tuple", "List", "Sequence")},
    "tuple": tuple, "list": list, "int": int, "float": float, "str": str, "bool": bool, "None": None,
}


def signature_types(factory: Callable[..., Any]) -> dict[str, Any]:
    """Each named parameter's type: its annotation (string annotations resolved), else its default's type.

    A class is read through its ``__init__``; an uninspectable callable gives ``{}`` (its values stay literals).
    """
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return {}
    target = factory.__init__ if isinstance(factory, type) else factory
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # an annotation that does not resolve (a name imported under TYPE_CHECKING, say)
        hints = {}
    namespace = {**_ANNOTATION_NAMES, **getattr(inspect.unwrap(target), "__globals__", {})}
    out: dict[str, Any] = {}
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        tp = hints.get(p.name, p.annotation)
        if isinstance(tp, str):
            try:
                tp = eval(tp, namespace)  # the factory's own annotation text, as typing.get_type_hints would
            except Exception:
                tp = inspect.Parameter.empty
        if tp is inspect.Parameter.empty:
            tp = _default_type(p.default)
        out[p.name] = tp
    return out


def _default_type(default: Any) -> Any:
    """Type implied by an unannotated parameter's default (an int default also takes a float, e.g. a width)."""
    if isinstance(default, bool):
        return bool
    if isinstance(default, int):
        return int | float
    if isinstance(default, float):
        return float
    if isinstance(default, str):
        return str
    if isinstance(default, (tuple, list)) and default and len({type(d) for d in default}) == 1:
        elem = {bool: bool, int: int, float: float, str: str}.get(type(default[0]))
        if elem is not None:
            return tuple[elem, ...] if isinstance(default, tuple) else list[elem]
    return _UNKNOWN


def coerce_kwargs(owner: str, factory: Callable[..., Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` typed by ``factory``'s signature (see ``_coerce``); keyword names are not checked here.

    Every string is read as text the same way, whether it is ``--arg`` text (``ArgText``), a TOML value or a
    worker's JSON payload (where ``ArgText`` arrives as a plain ``str``), so the parent process and a worker
    build the same module and ``shortcut="false"`` from a file is ``False`` too. Non-string values (TOML, the
    Python API) are checked against the type. A value that does not convert raises ``LatprofError``:
    ``--arg shortcut=maybe: expected a boolean (true/false/yes/no/1/0) for argument 'shortcut' of resnet_bottleneck``.
    """
    typed = signature_types(factory)
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        try:
            out[key] = _coerce(value, typed.get(key, _UNKNOWN))
        except _Mismatch as exc:
            shown = f"--arg {key}={value}" if isinstance(value, ArgText) else f"{key}={value!r}"
            raise LatprofError(f"{shown}: expected {exc} for argument {key!r} of {owner}") from None
    return out


WEIGHT_SEED = 0


def seeded_build(build: Callable[[], nn.Module], seed: int = WEIGHT_SEED) -> nn.Module:
    """Build with a fixed weight seed (the global RNG is left as it was): every run times the same weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def build_registered(
    name: str, input_shape: Shape | None = None, batch: int | None = None, **kwargs: Any
) -> Workload:
    """Build a registered workload; the input defaults to the spec's shape, ``batch`` replaces its first dim.

    Keyword arguments are typed by the factory's signature (``coerce_kwargs``); an ``input_shape`` of another rank
    than the spec's default input is an error quoting the shape as typed.
    """
    spec = get_spec(name)
    valid = spec.arguments()
    for key in kwargs:
        if key not in valid:
            raise unknown_choice(f"argument of {name}", key, valid)
    kwargs = coerce_kwargs(name, spec.factory, kwargs)
    try:
        module = seeded_build(lambda: spec.factory(**kwargs))
    except (TypeError, ValueError) as exc:
        raise LatprofError(f"{name}: cannot build with {_show_kwargs(kwargs)}: {one_line(exc)}") from None
    module.eval()
    if input_shape:
        try:
            default = spec.input_for(kwargs)
        except Exception:  # a default-input function that does not cope with these arguments: no rank check
            default = None
        if default:
            check_rank(input_shape, default, name)
    shape = with_batch(tuple(input_shape) if input_shape else spec.input_for(kwargs), batch)
    return Workload(name, module, shape, spec.kind, dict(kwargs), "registry", None, spec.description,
                    input_text=shape_text(input_shape) if input_shape else None)


def _show_kwargs(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or "no arguments"
