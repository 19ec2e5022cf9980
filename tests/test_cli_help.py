"""Every command's --help renders as a user reads it: no argparse escapes left in the text."""

import pytest

from holderpo.cli import COMMANDS, make_parser


@pytest.mark.parametrize("command", COMMANDS)
def test_help_text_has_no_leftover_percent_escapes(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        make_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert f"usage: holderpo {command}" in text
    assert "%%" not in text and "%(" not in text
