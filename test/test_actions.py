"""The action text format and its parser."""
import pytest

from panoseeker_ros.core.actions import (DPHI_VALUES, DTHETA_VALUES, Action, box_to_pixels, format_action,
                                         lattice_moves, parse_action, pixels_to_box)


def test_every_lattice_move_round_trips():
    moves = lattice_moves()
    assert len(moves) == len(DTHETA_VALUES) * len(DPHI_VALUES) - 1
    for a in moves:
        assert parse_action(format_action(a)).action == a


def test_format_is_explicit_about_signs():
    assert format_action(Action.move(30, -60)) == "MOVE +30 -60"
    assert format_action(Action.move(180, 0)) == "MOVE +180 0"
    assert format_action(Action.stop_at((100, 200, 300, 400))) == "STOP [100, 200, 300, 400]"
    assert format_action(Action.stop_at(None)) == "STOP"


@pytest.mark.parametrize("text, expected", [
    ("MOVE +30 -30", Action.move(30, -30)),
    ("move 60 0", Action.move(60, 0)),
    ("I will turn right. MOVE(120, 30)", Action.move(120, 30)),
    ("MOVE -180 0", Action.move(180, 0)),  # -180 and +180 are the same U-turn
    ("STOP [10, 20, 300, 400]", Action.stop_at((10, 20, 300, 400))),
    ("The target is centred: stop (10,20,300,400) done", Action.stop_at((10, 20, 300, 400))),
    ("STOP", Action.stop_at(None)),
])
def test_parser_accepts(text, expected):
    result = parse_action(text)
    assert result.ok and result.action == expected and result.error is None


@pytest.mark.parametrize("text, fragment", [
    ("MOVE +45 0", "dθ=+45"),
    ("MOVE 30 120", "dϕ=120"),
    ("MOVE 0 0", "does not move"),
    ("STOP [300, 20, 100, 400]", "empty"),
    ("STOP [10, 20, 300, 4000]", "within 0..1000"),
    ("turn a bit to the left", "no action"),
    ("", "no action"),
    (None, "expected text"),
    (42, "expected text"),
])
def test_parser_reports_errors_without_raising(text, fragment):
    result = parse_action(text)
    assert not result.ok and result.action is None
    assert fragment in result.error and "\n" not in result.error


def test_box_conversions():
    assert box_to_pixels((0, 0, 1000, 500), 1024, 768) == (0.0, 0.0, 1024.0, 384.0)
    assert pixels_to_box((0, 0, 1024, 384), 1024, 768) == (0, 0, 1000, 500)
    assert pixels_to_box((-5, 0, 2000, 384), 1024, 768) == (0, 0, 1000, 500)  # clipped to the view
