"""The run filter / order_by language, executed against a real database.

SQLite always; PostgreSQL when LOOPML_TEST_PG_URL is set (`make test`), as in
conftest.py. One database per module: hypothesis runs many examples against it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from loopml.errors import FilterError
from loopml.store.schema import experiments, latest_metrics, metadata, params, runs, tags
from loopml.store.search import (
    And,
    Comparison,
    Field,
    Not,
    compile_filter,
    compile_order_by,
    parse_filter,
    quote_string,
    status_expression,
)
from tests.conftest import ON_CI, PG_URL

NOW, HEARTBEAT_TIMEOUT = 10_000.0, 60.0
DEFAULT_ORDER = ["r5", "r6", "r4", "r3", "r2", "r1"]  # start_time DESC, id ASC (r5, r6 tie at 500)

RUNS = [  # id, name, status, start_time, heartbeat_at, end_time, parent_id, user
    ("r1", "alpha", "FINISHED", 100.0, 150.0, 150.0, None, "ann"),
    ("r2", "beta", "FINISHED", 200.0, 250.0, 250.0, None, "bob"),
    ("r3", "gamma", "FAILED", 300.0, 350.0, 350.0, None, None),
    ("r4", "delta", "RUNNING", 400.0, 9_990.0, None, None, "ann"),
    ("r5", "epsilon", "RUNNING", 500.0, 1_000.0, None, None, "bob"),  # stale heartbeat: reads as KILLED
    ("r6", "zeta", "KILLED", 500.0, 600.0, 600.0, "r1", "ann"),
]
PARAMS = {
    "r1": {"lr": "0.01", "optimizer": "adam", "a.b": "dotted", "probe": "x"},
    "r2": {"lr": "0.1", "optimizer": "sgd", "probe": "fixed"},
    "r3": {"lr": "0.001", "optimizer": "Adam"},
    "r4": {"lr": "0.01", "optimizer": "adam_w"},
    "r5": {"lr": "0.1"},
}
TAGS = {"r1": {"team": "vision"}, "r2": {"team": "nlp"}, "r4": {"team": "vision"}, "r5": {"team": "Vision"}}
METRICS = {  # None is how the store keeps NaN
    "r1": {"val_acc": 0.95, "loss": 0.1},
    "r2": {"val_acc": 0.80, "loss": 0.5},
    "r3": {"val_acc": None, "loss": 0.3},
    "r4": {"loss": 0.2},
    "r5": {"val_acc": 0.95, "val acc": 1.0},
    "r6": {"val_acc": 0.5, "loss": 0.9, "val/acc": 0.7},
}


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[sa.Engine]:
    if request.param == "sqlite":
        engine = sa.create_engine(f"sqlite:///{tmp_path_factory.mktemp('search') / 't.db'}")
    elif not PG_URL:
        if ON_CI:
            pytest.fail("LOOPML_TEST_PG_URL is not set on CI: run the suite through `make test`")
        pytest.skip("no PostgreSQL (set LOOPML_TEST_PG_URL or run `make test`)")
    else:
        engine = sa.create_engine(PG_URL)
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP SCHEMA IF EXISTS public CASCADE")
            conn.exec_driver_sql("CREATE SCHEMA public")
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(experiments), [{"id": 1, "name": "exp", "created_at": 0.0}])
        columns = ("id", "name", "status", "start_time", "heartbeat_at", "end_time", "parent_id", "user")
        conn.execute(sa.insert(runs), [dict(zip(columns, row), experiment_id=1) for row in RUNS])
        for table, rows in ((params, PARAMS), (tags, TAGS)):
            conn.execute(sa.insert(table), [{"run_id": r, "key": k, "value": v} for r, kv in rows.items() for k, v in kv.items()])
        conn.execute(
            sa.insert(latest_metrics),
            [
                {"run_id": r, "key": k, "value": v, "step": 0, "timestamp": 0.0, "min_value": v, "max_value": v, "count": 1}
                for r, kv in METRICS.items()
                for k, v in kv.items()
            ],
        )
    yield engine
    engine.dispose()


def search(engine: sa.Engine, filter: str | None = None, order_by: list[str] | str | None = None) -> list[str]:
    status = status_expression(NOW, HEARTBEAT_TIMEOUT)
    query = sa.select(runs.c.id).order_by(*compile_order_by(order_by, status=status))
    where = compile_filter(filter, status=status)
    if where is not None:
        query = query.where(where)
    with engine.connect() as conn:
        return list(conn.scalars(query))


@pytest.mark.parametrize(
    ("filter", "expected"),
    [
        ("metrics.val_acc > 0.9", ["r5", "r1"]),
        ("metrics.val_acc >= 0.8", ["r5", "r2", "r1"]),
        ("metrics.val_acc < 0.8", ["r6"]),
        ("metrics.val_acc <= 0.8", ["r6", "r2"]),
        ("metrics.val_acc = 0.95", ["r5", "r1"]),
        ("metric.val_acc == 95e-2", ["r5", "r1"]),
        # != and NOT IN need the key: NaN (r3) and missing (r4) do not match
        ("metrics.val_acc != 0.95", ["r6", "r2"]),
        ("metrics.val_acc <> 0.95", ["r6", "r2"]),
        ("metrics.val_acc IN (0.5, 0.8)", ["r6", "r2"]),
        ("metrics.val_acc not in (0.5, .8)", ["r5", "r1"]),
        ("metrics.val_acc IS NULL", ["r4"]),
        ("metrics.val_acc is not null", ["r5", "r6", "r3", "r2", "r1"]),
        ("not metrics.val_acc > 0.9", ["r6", "r4", "r3", "r2"]),
        ("metrics.loss > -1e3", ["r6", "r4", "r3", "r2", "r1"]),
        ("metrics.`val acc` = 1", ["r5"]),
        ('metrics."val acc" = +1.0', ["r5"]),
        ("metrics.val/acc=0.7", ["r6"]),
        ("params.lr = '0.01'", ["r4", "r1"]),
        ('params.lr = "0.01"', ["r4", "r1"]),
        ("params.lr != '0.01'", ["r5", "r3", "r2"]),
        ("params.lr < '0.01'", ["r3"]),
        ("params.lr <= '0.01'", ["r4", "r3", "r1"]),
        ("params.lr > '0.01'", ["r5", "r2"]),
        ("params.lr >= '0.1'", ["r5", "r2"]),
        ("params.optimizer LIKE 'adam%'", ["r4", "r1"]),  # case-sensitive on every engine
        ("params.optimizer ILIKE 'ADAM%'", ["r4", "r3", "r1"]),
        ("params.optimizer like 'adam_'", []),
        ("params.optimizer LIKE 'adam\\_%'", ["r4"]),
        ("params.optimizer IN ('sgd', 'Adam')", ["r3", "r2"]),
        ("params.optimizer NOT IN ('sgd', 'Adam')", ["r4", "r1"]),
        ("params.optimizer IS NULL", ["r5", "r6"]),
        ("params.a.b = 'dotted'", ["r1"]),
        ("params.`a.b` = 'dotted'", ["r1"]),
        ('param."a.b" = \'dotted\'', ["r1"]),
        ("tags.team = 'vision'", ["r4", "r1"]),
        ("tag.team != 'vision'", ["r5", "r2"]),
        ("tags.team ILIKE 'VISION'", ["r5", "r4", "r1"]),
        ("status = 'KILLED'", ["r5", "r6"]),
        ("status = 'running'", ["r4"]),
        ("attributes.status IN ('FINISHED', 'failed')", ["r3", "r2", "r1"]),
        ("STATUS != 'KILLED'", ["r4", "r3", "r2", "r1"]),
        ("name = 'beta'", ["r2"]),
        ("run_name LIKE '%ta'", ["r6", "r4", "r2"]),
        ("attr.run_id = 'r3' or id = 'r4'", ["r4", "r3"]),
        ("parent_id = 'r1'", ["r6"]),
        ("not parent_id = 'r1'", ["r5", "r4", "r3", "r2", "r1"]),  # NULL is not 'r1'
        ("user IS NULL", ["r3"]),
        ("start_time >= 300 and start_time < 500", ["r4", "r3"]),
        ("end_time > 200", ["r6", "r3", "r2"]),
        ("not end_time > 200", ["r5", "r4", "r1"]),
        ("heartbeat_at > 9000", ["r4"]),
        ("experiment_id = 1", DEFAULT_ORDER),
        # precedence: NOT > AND > OR
        ("params.lr = '0.1' or params.lr = '0.01' and tags.team = 'nlp'", ["r5", "r2"]),
        ("(params.lr = '0.1' or params.lr = '0.01') and tags.team = 'nlp'", ["r2"]),
        ("not params.lr = '0.1' and tags.team = 'vision'", ["r4", "r1"]),
        ("NOT (params.lr = '0.1' AND tags.team = 'Vision')", ["r6", "r4", "r3", "r2", "r1"]),
        ("not not status = 'FAILED'", ["r3"]),
        ("((metrics.val_acc > 0.9)) AND Params.lr = '0.1'", ["r5"]),
        ("   ", DEFAULT_ORDER),
    ],
)
def test_filter(db: sa.Engine, filter: str, expected: list[str]) -> None:
    assert search(db, filter) == expected


@pytest.mark.parametrize(
    ("order_by", "expected"),
    [
        (None, DEFAULT_ORDER),
        ([], DEFAULT_ORDER),
        ("", DEFAULT_ORDER),
        # NaN (r3) and missing (r4) last in both directions; 0.95 tie broken by start_time DESC
        (["metrics.val_acc"], ["r6", "r2", "r5", "r1", "r4", "r3"]),
        (["metrics.val_acc DESC"], ["r5", "r1", "r2", "r6", "r4", "r3"]),
        (["params.lr desc"], ["r5", "r2", "r4", "r1", "r3", "r6"]),
        (["params.lr ASC"], ["r3", "r4", "r1", "r5", "r2", "r6"]),
        (["tags.team"], ["r5", "r2", "r4", "r1", "r6", "r3"]),  # by code point: 'Vision' < 'nlp'
        (["name DESC"], ["r6", "r3", "r5", "r4", "r2", "r1"]),
        (["status", "name"], ["r3", "r1", "r2", "r5", "r6", "r4"]),  # stale r5 sorts as KILLED
        ("status, run_name desc", ["r3", "r2", "r1", "r6", "r5", "r4"]),
        (["end_time DESC"], ["r6", "r3", "r2", "r1", "r5", "r4"]),
        (["start_time"], ["r1", "r2", "r3", "r4", "r5", "r6"]),  # r5/r6 tie broken by id
    ],
)
def test_order_by(db: sa.Engine, order_by: list[str] | str | None, expected: list[str]) -> None:
    assert search(db, order_by=order_by) == expected


def test_filter_and_order_by_together(db: sa.Engine) -> None:
    assert search(db, "metrics.val_acc IS NOT NULL", ["metrics.val_acc DESC"]) == ["r5", "r1", "r2", "r6", "r3"]


def test_status_expression_reads_a_stale_run_as_killed(db: sa.Engine) -> None:
    query = sa.select(runs.c.id, status_expression(NOW, HEARTBEAT_TIMEOUT)).order_by(runs.c.id)
    with db.connect() as conn:
        assert dict(conn.execute(query).all())["r5"] == "KILLED"
        later = sa.select(status_expression(NOW + 10_000, HEARTBEAT_TIMEOUT)).where(runs.c.id == "r4")
        assert conn.scalar(later) == "KILLED"


def test_parse_filter_builds_the_tree() -> None:
    assert parse_filter("metrics.acc > 0.9 and not attr.run_name = 'x' AND params.lr IN ('1', \"2\")") == And(
        (
            Comparison(Field("metrics", "acc"), ">", 0.9),
            Not(Comparison(Field("attributes", "name"), "=", "x")),
            Comparison(Field("params", "lr"), "IN", ("1", "2")),
        )
    )
    assert parse_filter("tags.t IS NOT NULL").field.position == 0  # type: ignore[union-attr]
    assert compile_filter(None, status=status_expression(NOW, 1)) is None


@pytest.mark.parametrize(
    ("filter", "message", "position"),
    [
        ("foo.x = 1", "Unknown prefix 'foo.' in 'foo.x': expected metrics., params., tags. or attributes.", 0),
        (
            "metrics.acc foo 1",
            "Expected a comparison operator (=, !=, <, <=, >, >=, LIKE, ILIKE, IN) after 'metrics.acc', got 'foo'",
            12,
        ),
        ("metrics.acc", "after 'metrics.acc', got end of input", 11),
        ("metrics.acc >", "Expected a value after 'metrics.acc >', got end of input", 13),
        ("metrics.acc > and", "Expected a value after 'metrics.acc >', got 'and'", 14),
        ("params.lr = 'abc", "Unterminated string: add the closing '", 12),
        ("metrics.`a b > 1", "Unterminated quoted key: add the closing `", 8),
        ("(metrics.acc > 1 or (params.a = 'b')", "Unbalanced parenthesis: this '(' is never closed", 0),
        ("metrics.acc > 1)", "Unbalanced parenthesis: this ')' has no matching '('", 15),
        ("(metrics.acc > 1 foo)", "Expected ')', AND or OR, got 'foo'", 17),
        ("metrics.acc > 1 foo", "Expected AND, OR or the end of the filter, got 'foo'", 16),
        ("metrics.acc > '0.9'", "metrics are numbers: write metrics.acc > 0.9", 14),
        ("metrics.acc IN ('x')", "metrics are numbers: write metrics.acc IN (0.9)", 16),
        ("params.lr = 0.01", "params are strings: write params.lr = '0.01'", 12),
        ("tags.t != 3", "tags are strings: write tags.t != '3'", 10),
        ("name > 3", "name is a string: write name > '3'", 7),
        ("start_time > 'now'", "start_time is a number: write start_time > 0.9", 13),
        ("status = 'DONE'", "Unknown status 'DONE': expected one of RUNNING, FINISHED, FAILED, KILLED", 9),
        ("attributes.colour = 'x'", "Unknown attribute 'colour': expected one of status, name", 11),
        ("colour = 'x'", "Expected metrics.<key>, params.<key>, tags.<key> or an attribute (status, name", 0),
        ("metrics. = 1", "Expected a key after 'metrics.'", 8),
        ("metrics.acc LIKE '%'", "LIKE compares strings, but metrics are numbers", 12),
        ("params.x LIKE 'a\\\\'", "The pattern ends with a backslash that escapes nothing", 14),
        ("metrics.acc ! 1", "Unexpected character '!' (did you mean '!='?)", 12),
        ("experiment_id = 1.5", "experiment_id is an integer, got 1.5", 16),
        ("metrics.acc IN 1", "Expected '(' after IN", 15),
        ("metrics.acc IN (1 2)", "Expected ',' or ')' in the IN list, got '2'", 18),
        ("params.lr NOT LIKE 'a'", "Expected IN after 'params.lr NOT', got 'LIKE'", 14),
        ("params.lr IS 3", "Expected NULL or NOT NULL after IS, got '3'", 13),
        ("metrics.a > 1 and", "Expected metrics.<key>", 17),
        ("", "got end of input", 0),
        ("name = '\ud800'", "Invalid character '\\ud800': not valid Unicode", 8),
    ],
)
def test_filter_errors(filter: str, message: str, position: int) -> None:
    with pytest.raises(FilterError, match=re.escape(message)) as caught:
        parse_filter(filter)
    assert caught.value.position == position
    if filter:
        assert str(caught.value).endswith(f"\n  {filter}\n  {' ' * position}^")


@pytest.mark.parametrize(
    ("order_by", "message", "position"),
    [
        ("metrics.acc DOWN", "Expected ASC or DESC after 'metrics.acc', got 'DOWN'", 12),
        ("metrics.acc DESC DESC", "Expected ',' or the end of the item after 'metrics.acc', got 'DESC'", 17),
        ("foo.bar", "Unknown prefix 'foo.'", 0),
        ("name,", "got end of input", 5),
    ],
)
def test_order_by_errors(order_by: str, message: str, position: int) -> None:
    with pytest.raises(FilterError, match=re.escape(message)) as caught:
        compile_order_by(["name", order_by], status=status_expression(NOW, 1))
    assert caught.value.position == position
    assert caught.value.text == order_by


def test_bad_argument_types() -> None:
    status = status_expression(NOW, 1)
    with pytest.raises(TypeError, match="Argument order_by should hold strings, e.g."):
        compile_order_by([1], status=status)  # type: ignore[list-item]
    with pytest.raises(TypeError, match="Argument filter should be a string"):
        compile_filter(1, status=status)  # type: ignore[arg-type]


def test_sql_injection_is_only_ever_a_value(db: sa.Engine) -> None:
    attack = "'; DROP TABLE runs; --"
    assert search(db, f"params.lr = {quote_string(attack)}") == []
    assert search(db, f'params.lr = "{attack}" or tags.`{attack}` IS NOT NULL') == []
    with pytest.raises(FilterError, match="Unexpected character ';'") as caught:
        search(db, f"params.lr = '{attack}'")
    assert caught.value.position == 14
    sql = str(compile_filter(f"params.lr = {quote_string(attack)}", status=status_expression(NOW, 1)))
    assert "DROP" not in sql
    assert sa.inspect(db).has_table("runs")
    assert len(search(db)) == len(RUNS)


def test_like_is_case_sensitive_and_escapes_the_same_everywhere(db: sa.Engine) -> None:
    # GLOB stands in for LIKE on SQLite; its own wildcards must stay literal.
    assert search(db, "name LIKE 'ALPHA'") == []
    assert search(db, "name ILIKE 'ALPHA'") == ["r1"]
    assert search(db, "name LIKE '*' or name LIKE '?eta' or name LIKE '[a-z]%'") == []
    assert search(db, "name LIKE '_eta'") == ["r6", "r2"]
    assert search(db, "name NOT IN ('alpha') and name LIKE '%a\\%'") == []


FUZZ_TOKENS = [
    "metrics.acc", "params.lr", "tags.t", "attr.status", "status", "name", "end_time", "metrics.`a b`", "foo.",
    "=", "==", "!=", "<>", "<", "<=", ">", ">=", "!", "LIKE", "ilike", "IN", "NOT", "IS", "NULL", "and", "OR",
    "ASC", "desc", "(", ")", ",", "'x'", "'RUNNING'", "'a%\\'", '"q', "1", "-2.5e3", ".5", "1e999", ";", "`",
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.lists(st.sampled_from(FUZZ_TOKENS), max_size=10).map(" ".join)))
def test_any_text_parses_or_raises_filter_error(db: sa.Engine, text: str) -> None:
    try:
        result = search(db, text)
    except FilterError as exc:
        assert exc.position is not None and 0 <= exc.position <= len(text)
    else:
        assert set(result) <= {row[0] for row in RUNS}
    try:
        compile_order_by(text, status=status_expression(NOW, 1))
    except FilterError as exc:
        assert exc.position is not None and 0 <= exc.position <= len(text)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00")))
def test_any_string_round_trips_through_a_param_filter(db: sa.Engine, value: str) -> None:
    with db.begin() as conn:
        conn.execute(sa.update(params).where(params.c.run_id == "r1", params.c.key == "probe").values(value=value))
    expected = ["r2", "r1"] if value == "fixed" else ["r1"]
    assert search(db, f"params.probe = {quote_string(value)}") == expected
    assert search(db, f"params.probe IN ('nothing', {quote_string(value)})") == expected
