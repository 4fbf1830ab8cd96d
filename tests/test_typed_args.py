"""Typed ``--arg`` (issue 12): values are converted by the factory's signature wherever kwargs meet a factory, and
shape errors quote what the user typed."""

from __future__ import annotations

from typing import Literal, Optional

import pytest

from latprof.cli import main
from latprof.errors import LatprofError
from latprof.shapes import parse_shape, shape_text
from latprof.workloads import create_workload
from latprof.workloads.registry import ArgText, coerce_kwargs, parse_kwargs


def _args(*pairs: str) -> dict:
    return parse_kwargs(list(pairs))


@pytest.mark.parametrize("text,expected", [
    ("true", True), ("True", True), ("TRUE", True), ("yes", True), ("On", True), ("1", True),
    ("false", False), ("False", False), ("no", False), ("OFF", False), ("0", False), ("No", False),
])
def test_bool_words(text, expected):
    w = create_workload("resnet_bottleneck", in_channels=32, mid_channels=8, **_args(f"shortcut={text}"))
    assert w.kwargs["shortcut"] is expected
    assert w.module.use_shortcut is expected


def test_shortcut_false_removes_the_add():
    """The issue's example: ``--arg shortcut=false`` used to stay the truthy string "false"."""
    from latprof.cost.api import count_named

    def ops(*pairs: str) -> set[str]:
        report = count_named("resnet_bottleneck", None, False, **_args(*pairs))
        return {str(row["op"]) for row in report.aggregate("op")}

    assert "add" in ops("shortcut=true")
    assert "add" not in ops("shortcut=false")


def test_bad_bool_is_one_line_error_naming_everything():
    with pytest.raises(LatprofError) as exc:
        create_workload("resnet_bottleneck", **_args("shortcut=maybe"))
    assert str(exc.value) == ("--arg shortcut=maybe: expected a boolean (true/false/yes/no/1/0) for argument "
                              "'shortcut' of resnet_bottleneck")


def test_int_float_str_optional():
    w = create_workload("resnet_bottleneck", **_args("in_channels=32", "mid_channels=8", "out_channels=none"))
    assert w.kwargs == {"in_channels": 32, "mid_channels": 8, "out_channels": None}
    assert type(w.kwargs["in_channels"]) is int
    w = create_workload("resnet_bottleneck", **_args("in_channels=32", "mid_channels=8", "out_channels=64"))
    assert w.kwargs["out_channels"] == 64
    with pytest.raises(LatprofError, match=r"--arg in_channels=6\.5: expected an integer for argument 'in_channels'"):
        create_workload("resnet_bottleneck", **_args("in_channels=6.5"))
    with pytest.raises(LatprofError, match=r"expected an integer or none for argument 'out_channels'"):
        create_workload("resnet_bottleneck", **_args("out_channels=wide"))
    w = create_workload("fragment_block", **_args("arrangement=parallel", "fragments=2", "channels=8"))
    assert w.kwargs == {"arrangement": "parallel", "fragments": 2, "channels": 8}
    assert create_workload("fragment_block", **_args("arrangement='series'")).kwargs["arrangement"] == "series"


def test_typed_values_from_files_and_api_are_checked_too():
    """TOML and the Python API meet the same conversion: a string "false" is False, a wrong type an error."""
    w = create_workload("resnet_bottleneck", in_channels=32, mid_channels=8, shortcut="false", relu="no")
    assert w.kwargs["shortcut"] is False and w.kwargs["relu"] is False
    assert create_workload("resnet_bottleneck", in_channels=32.0, mid_channels=8).kwargs["in_channels"] == 32
    with pytest.raises(LatprofError, match=r"shortcut='maybe': expected a boolean"):
        create_workload("resnet_bottleneck", shortcut="maybe")


def _factory(
    flag: bool = False,
    n: int = 1,
    scale: float = 1.0,
    name: str = "a",
    sizes: tuple[int, ...] = (3,),
    pair: tuple[int, int] = (1, 1),
    widths: list[int] | None = None,
    maybe: Optional[int] = None,
    mode: Literal["series", "parallel"] = "series",
    untyped=None,
    width_mult=1,
    **extra,
):
    return None


@pytest.mark.parametrize("pair,key,expected", [
    ("sizes=3,5", "sizes", (3, 5)),
    ("sizes=(3,5)", "sizes", (3, 5)),
    ("sizes=[3, 5]", "sizes", (3, 5)),
    ("sizes=7", "sizes", (7,)),
    ("sizes=3,", "sizes", (3,)),
    ("pair=2,4", "pair", (2, 4)),
    ("widths=8,16", "widths", [8, 16]),
    ("widths=None", "widths", None),
    ("maybe=none", "maybe", None),
    ("maybe=4", "maybe", 4),
    ("scale=0.5", "scale", 0.5),
    ("scale=2", "scale", 2.0),
    ("name=relu6", "name", "relu6"),
    ("name=\"64\"", "name", "64"),
    ("name=64", "name", "64"),
    ("mode=parallel", "mode", "parallel"),
    ("untyped=(1, 2)", "untyped", (1, 2)),  # no annotation, no default type: a Python literal as before
    ("untyped=word", "untyped", "word"),
    ("width_mult=0.75", "width_mult", 0.75),  # unannotated int default also takes a float
    ("extra_thing=3", "extra_thing", 3),  # **extra: a literal
    ("flag=YES", "flag", True),
])
def test_coercion_by_signature(pair, key, expected):
    got = coerce_kwargs("f", _factory, _args(pair))[key]
    assert got == expected and type(got) is type(expected)
    assert not isinstance(got, ArgText)


@pytest.mark.parametrize("pair,expected", [
    ("n=ten", "expected an integer for argument 'n' of f"),
    ("n=true", "expected an integer"),
    ("scale=fast", "expected a number"),
    ("sizes=3,x", "expected a comma-separated list of integers, e.g. 3,3"),
    ("pair=1,2,3", "expected 2 integers, e.g. 3,3"),
    ("mode=diagonal", "expected one of series, parallel"),
    ("flag=2", "expected a boolean (true/false/yes/no/1/0)"),
])
def test_coercion_errors(pair, expected):
    with pytest.raises(LatprofError) as exc:
        coerce_kwargs("f", _factory, _args(pair))
    message = str(exc.value)
    assert expected in message and message.startswith(f"--arg {pair}:") and "\n" not in message


def test_string_annotations_from_future_import_resolve():
    namespace: dict = {}
    exec("from __future__ import annotations\n"
         "def build(flag: bool = True, sizes: tuple[int, ...] = (1,), depth: 'int | None' = None):\n"
         "    return None\n", namespace)
    got = coerce_kwargs("build", namespace["build"], _args("flag=off", "sizes=1,2", "depth=none"))
    assert got == {"flag": False, "sizes": (1, 2), "depth": None}


def test_user_model_callable_gets_typed_args(tmp_path):
    model = tmp_path / "typed_model.py"
    model.write_text(
        "from __future__ import annotations\n"
        "import torch\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self, residual: bool):\n"
        "        super().__init__()\n"
        "        self.residual = residual\n"
        "        self.conv = torch.nn.Conv2d(3, 3, 1)\n"
        "    def forward(self, x):\n"
        "        return self.conv(x) + x if self.residual else self.conv(x)\n"
        "def build(residual: bool = True, width: int = 3):\n"
        "    assert isinstance(residual, bool) and isinstance(width, int)\n"
        "    return Net(residual), (1, width, 8, 8)\n"
    )
    w = create_workload(f"{model}:build", **_args("residual=false", "width=3"))
    assert w.kwargs == {"residual": False, "width": 3}
    assert w.module.residual is False
    with pytest.raises(LatprofError, match=r"--arg residual=perhaps: expected a boolean .* of .*typed_model.py:build"):
        create_workload(f"{model}:build", **_args("residual=perhaps"))


def test_parse_kwargs_keeps_the_text():
    kw = parse_kwargs(["out_channels=64", "act='relu6'", "flag = false "])
    assert kw == {"out_channels": "64", "act": "'relu6'", "flag": "false"}
    assert all(isinstance(v, ArgText) for v in kw.values())
    with pytest.raises(LatprofError, match="malformed --arg"):
        parse_kwargs(["nokey"])


def test_cli_count_with_false_and_bad_value(capsys):
    assert main(["count", "--model", "resnet_bottleneck", "--arg", "shortcut=false", "--by", "op"]) == 0
    out = capsys.readouterr().out
    assert "│ convolution" in out and "│ add " not in out
    assert main(["count", "--model", "resnet_bottleneck", "--arg", "shortcut=maybe"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "--arg shortcut=maybe: expected a boolean (true/false/yes/no/1/0) for argument 'shortcut'" in err


# ------------------------------------------------------------------ shapes quoted as typed
def test_parse_shape_remembers_the_text():
    shape = parse_shape("3×64x64")
    assert shape == (3, 64, 64) and shape_text(shape) == "3×64x64"
    assert shape_text((1, 2)) == "1x2"
    import pickle

    again = pickle.loads(pickle.dumps(shape))
    assert again == shape and shape_text(again) == "3×64x64"


def test_rank_error_quotes_the_input_as_typed():
    with pytest.raises(LatprofError) as exc:
        create_workload("conv_bn_relu", input_shape=parse_shape("3x64x64"), batch=1)
    message = str(exc.value)
    assert message.startswith("--input 3x64x64: conv_bn_relu takes 4 dimensions (NxCxHxW), e.g. 1x3x64x64")
    assert "1x64x64" not in message


def test_rejected_input_quotes_the_input_as_typed():
    w = create_workload("conv_bn_relu", input_shape=parse_shape("1x5x64x64"), batch=1)
    with pytest.raises(LatprofError) as exc:
        w.check_input()
    assert str(exc.value).startswith("conv_bn_relu rejects input 1x5x64x64: ")
    w = create_workload("conv_bn_relu", input_shape=parse_shape("1×5×64×64"), batch=2)
    with pytest.raises(LatprofError, match=r"^conv_bn_relu rejects input 1×5×64×64 \(run as 2x5x64x64\): "):
        w.check_input()


def test_cli_profile_and_count_quote_the_typed_input(tmp_path, capsys):
    for argv in (["profile", "--model", "conv_bn_relu", "--input", "3x64x64", "--out", str(tmp_path / "p")],
                 ["count", "--model", "conv_bn_relu", "--input", "3x64x64"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "--input 3x64x64: conv_bn_relu takes 4 dimensions (NxCxHxW)" in err
        assert "1x64x64" not in err
