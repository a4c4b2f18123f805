"""``mpqbench methods``: every registered method and every config field it takes."""

from __future__ import annotations

import pytest

from mpqbench.cli import main
from mpqbench.method import available_methods, get_method, make_config
from mpqbench.method.describe import config_fields


@pytest.mark.parametrize("name", available_methods())
def test_every_field_is_listed_with_help_and_settable_by_its_dotted_name(name, capsys):
    fields = config_fields(get_method(name).config_cls)
    assert fields and all(f.help for f in fields), [f.name for f in fields if not f.help]
    assert main(["methods", name]) == 0
    out = capsys.readouterr().out
    for f in fields:
        assert f"  {f.name} " in out
        # the listed name is what params take: setting it to its default is accepted
        head, _, leaf = f.name.rpartition(".")
        params = {head: {leaf: f.default}} if head else {leaf: f.default}
        make_config(name, params)
    assert "train_steps" in out  # the shared budget


def test_list_names_every_method_and_unknown_name_is_refused(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert all(line.split()[0] in available_methods()
               for line in out.splitlines()[: len(available_methods())])
    assert main(["methods", "magic"]) == 2
    assert "magic" in capsys.readouterr().err
