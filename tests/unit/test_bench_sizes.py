"""The size curves' arithmetic and arguments (placedock.commands.bench.sizes), with no stack:
the growth is the log–log slope, the SQL that clones a unit takes nothing but
UUIDs and ints, and --quick is the smallest size only, written away from docs/."""

import uuid

import pytest
from placedock.commands.bench import cli, sizes
from placedock.stack import compose as stack


@pytest.mark.parametrize("power", [0, 1, 2, 0.5])
def test_the_growth_is_the_slope_on_a_log_log_plot(power):
    xs = [1000, 4000, 16000]
    assert sizes.slope(xs, [3 * x**power for x in xs]) == pytest.approx(power)


def test_a_curve_with_fewer_than_two_points_has_no_slope():
    assert sizes.slope([1000], [0.1]) is None
    assert sizes.slope([1000, 4000], [0.1, 0]) is None


def test_the_clone_sql_takes_only_uuids():
    good = [str(uuid.uuid4()) for _ in range(3)]
    text = sizes.clone_sql(good, good[:1], 5)
    assert "seq_1_to_5" in text and all(u in text for u in good)
    with pytest.raises(ValueError):
        sizes.clone_sql([*good, "x'); DROP TABLE allocations; --"], good[:1], 5)


def test_quick_is_the_smallest_size_alone_and_leaves_docs_alone():
    args = cli.parse_args(["--quick"])
    assert args.sizes == [1000]
    assert (args.no_raw, args.no_galera, args.no_postgres, args.variants) == (True, True, True, [])
    assert args.out != stack.ROOT / "docs"
    assert cli.parse_args([]).sizes == [1000, 4000, 16000]
    assert cli.parse_args(["--sizes", ""]).sizes == []


def test_an_unknown_shape_is_named(capsys):
    with pytest.raises(SystemExit):
        cli.parse_args(["--shapes", "flat,star"])
    assert "no shape star" in capsys.readouterr().err
