"""People name themes: the name survives runs, shows in the views and the CLI; bad names are refused in one line."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import IntegrityError
from typer.testing import CliRunner

from tests.integration.helpers import scratch_database
from worker.cli import app
from worker.clustering import ClusteringService
from worker.db import get_engine, session_scope
from worker.services import ServiceUrls
from worker.settings import ClusteringSettings, get_settings
from worker.store.clusters import save_cluster
from worker.store.dashboard import grant_dashboard
from worker.store.model_versions import register_model_version

pytestmark = pytest.mark.integration

DIMS, GROUPS, PER_GROUP = 32, 3, 20
SETTINGS = ClusteringSettings(min_cluster_size=6, min_items=10)
WORDS = ("card arrives late", "refund money back", "login password reset")


@pytest.fixture
def engine(stack: ServiceUrls) -> Iterator[Engine]:
    for url in scratch_database(stack.database_url, prefix="themenames"):
        yield get_engine(url)


@pytest.fixture(scope="module")
def clustered(stack: ServiceUrls) -> Iterator[tuple[str, list[int]]]:
    """A database of its own, clustered once, for the tests that only read or refuse: (URL, a theme per group)."""
    for url in scratch_database(stack.database_url, prefix="themenamecli"):
        engine = get_engine(url)
        groups = store_groups(engine)
        run(engine)
        yield url, theme_per_group(engine, groups)


def store_groups(engine: Engine) -> list[list[int]]:
    """GROUPS tight groups of feedback vectors, each with its own words, under a new active version; item ids."""
    with engine.begin() as conn:
        version = register_model_version(conn, name="names@clusters", base_model="fake", path=None, dims=DIMS)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(GROUPS, DIMS))
    groups: list[list[int]] = []
    with engine.begin() as conn:
        for g in range(GROUPS):
            groups.append([])
            for i in range(PER_GROUP):
                vector = centres[g] + rng.normal(scale=0.05, size=DIMS)
                body = f"{WORDS[g]} (message {i})"
                groups[-1].append(conn.scalar(
                    text("""INSERT INTO items (kind, external_id, event_id, text, content_sha256, occurred_at, metadata)
                            VALUES ('feedback', :x, :e, :t, :h, now(), '{}') RETURNING id"""),
                    {"x": f"g{g}-{i}", "e": uuid.uuid4(), "t": body, "h": hashlib.sha256(body.encode()).hexdigest()},
                ))  # fmt: skip
                conn.execute(
                    text("""INSERT INTO embeddings (item_id, model_version_id, vector, chunks_total, chunks_used)
                            VALUES (:i, :v, :vec, 1, 1)"""),
                    {"i": groups[-1][-1], "v": version, "vec": str((vector / np.linalg.norm(vector)).tolist())},
                )
    return groups


def run(engine: Engine, settings: ClusteringSettings = SETTINGS) -> int:
    with engine.connect() as conn:
        version = conn.execute(text("SELECT max(id) FROM model_versions")).scalar_one()
    summary = ClusteringService(engine=engine, model_version_id=version, settings=settings).run()
    assert summary.status == "succeeded", summary
    return summary.run_id


def theme_per_group(engine: Engine, groups: list[list[int]]) -> list[int]:
    """The theme most of each group's items belong to."""
    with engine.connect() as conn:
        members = dict(conn.execute(text("SELECT item_id, cluster_id FROM cluster_members")).tuples().all())
    return [max(set(ids := [members[i] for i in group]), key=ids.count) for group in groups]


def auto_label(engine: Engine, theme: int) -> str:
    with engine.connect() as conn:
        return str(conn.scalar(text("SELECT label FROM clusters WHERE id = :c"), {"c": theme}))


def names(engine: Engine) -> dict[int, tuple[str | None, str | None, bool]]:
    """Each theme's (name, named_by, retired)."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, name, named_by, retired_at IS NOT NULL FROM clusters"))
        return {r[0]: (r[1], r[2], r[3]) for r in rows}


def tagworker(url: str, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    """`tagworker ARGS` in this process against the database at `url`: exit code and output (stderr included)."""
    monkeypatch.setenv("TAGWORKER_DATABASE__URL", url)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, list(args))
    finally:
        get_settings.cache_clear()
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def test_a_name_survives_the_next_run_and_the_views_show_it(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every run rewrites the automatic label; a person's name for the theme must stay with its id."""
    groups = store_groups(engine)
    run(engine)
    card, refund, _ = theme_per_group(engine, groups)
    card_label, refund_label = auto_label(engine, card), auto_label(engine, refund)
    url = engine.url.render_as_string(hide_password=False)
    code, output = tagworker(url, monkeypatch, "cluster", "name", str(card), " Card delivery delays ", "--actor", "ana")
    assert code == 0, output
    assert output.strip() == f"theme {card} is now named 'Card delivery delays' (automatic label: {card_label})"
    with engine.connect() as conn:
        named_at = conn.scalar(text("SELECT named_at FROM clusters WHERE id = :c"), {"c": card})

    second = run(engine)

    assert theme_per_group(engine, groups)[:2] == [card, refund]
    with engine.connect() as conn:
        continued = conn.scalar(text("SELECT count(*) FROM cluster_lineage WHERE run_id = :r AND cluster_id = :c "
                                     "AND event = 'continued'"), {"r": second, "c": card})  # fmt: skip
        row = conn.execute(text("SELECT name, named_by, named_at, label, last_run_id FROM clusters WHERE id = :c"),
                           {"c": card}).one()  # fmt: skip
        view = conn.execute(text("SELECT cluster_id, label, auto_label, named_by FROM dashboard.clusters "
                                 "WHERE cluster_id IN (:c, :r)"), {"c": card, "r": refund}).all()  # fmt: skip
        feedback = set(conn.scalars(text("SELECT cluster_label FROM dashboard.feedback_clusters WHERE cluster_id = :c"),
                                    {"c": card}))  # fmt: skip
        daily = conn.execute(text("SELECT cluster_label FROM dashboard.cluster_trend_daily "
                                  "WHERE cluster_id = :c"), {"c": card}).all()  # fmt: skip
    assert continued == 1 and row.last_run_id == second, "the second run rewrote the theme"
    assert (row.name, row.named_by, row.named_at, row.label) == (
        "Card delivery delays", "ana", named_at, card_label
    )  # fmt: skip
    expected = {card: ("Card delivery delays", card_label, "ana"), refund: (refund_label, refund_label, None)}
    assert {v.cluster_id: (v.label, v.auto_label, v.named_by) for v in view} == expected
    assert feedback == {"Card delivery delays"}
    assert [d.cluster_label for d in daily] == ["Card delivery delays"], "one row a day for the theme"

    code, output = tagworker(url, monkeypatch, "cluster", "name", str(card), "--clear")
    assert code == 0, output
    assert output.strip() == f"theme {card} shows its automatic label again: {card_label}"
    assert names(engine)[card] == (None, None, False)
    with engine.connect() as conn:
        label = conn.scalar(text("SELECT label FROM dashboard.clusters WHERE cluster_id = :c"), {"c": card})
    assert label == card_label


def test_a_split_starts_unnamed_a_merge_keeps_the_absorbing_name_and_retired_themes_keep_theirs(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    groups = store_groups(engine)
    run(engine)
    card, refund, login = theme_per_group(engine, groups)
    url = engine.url.render_as_string(hide_password=False)
    for theme, name in ((card, "Card"), (refund, "Refunds"), (login, "Login")):
        assert tagworker(url, monkeypatch, "cluster", "name", str(theme), name)[0] == 0
    relabel(engine, groups[1], card)  # the refund items were in the card theme: it splits in two

    split_run = run(engine)

    kept, split = theme_per_group(engine, groups)[:2]
    assert card in (kept, split) and refund not in (kept, split)
    new = split if kept == card else kept
    assert events(engine, split_run, new) == [("split", [card])]
    assert names(engine)[card] == ("Card", "cli", False)
    assert names(engine)[new] == (None, None, False), "a theme split off starts unnamed"
    assert names(engine)[refund] == ("Refunds", "cli", True), "a retired theme keeps its name"
    code, output = tagworker(url, monkeypatch, "cluster", "name", str(refund), "Money back")
    assert code == 2, output
    assert output.strip() == (
        f"error: theme {refund} was retired by run {split_run}; name a current theme: tagworker cluster show"
    )

    card_group = groups[0] if theme_per_group(engine, groups)[0] == card else groups[1]
    relabel(engine, card_group[:5], login)  # a few of the login theme's items are about cards now...
    with engine.begin() as conn:  # ...and the rest left the window: the card theme absorbs the login theme
        conn.execute(text("UPDATE items SET occurred_at = now() - interval '60 days', received_at = now() - "
                          "interval '60 days' WHERE id = ANY(:ids)"), {"ids": groups[2]})  # fmt: skip

    merge_run = run(engine, SETTINGS.model_copy(update={"window_days": 30}))

    assert ("merged", [login]) in events(engine, merge_run, card)
    assert names(engine)[card] == ("Card", "cli", False), "the absorbing theme keeps its name"
    assert names(engine)[login] == ("Login", "cli", True)


def relabel(engine: Engine, item_ids: list[int], theme: int) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE cluster_members SET cluster_id = :c WHERE item_id = ANY(:ids)"),
                     {"c": theme, "ids": item_ids})  # fmt: skip


def events(engine: Engine, run_id: int, theme: int) -> list[tuple[str, list[int]]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT event, related_cluster_ids FROM cluster_lineage WHERE run_id = :r AND "
                "cluster_id = :c AND event <> 'continued' ORDER BY id"
            ),
            {"r": run_id, "c": theme},
        )
        return [(r[0], list(r[1])) for r in rows]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["999999", "Anything"], "no theme 999999; the current themes and their ids: tagworker cluster show"),
        (["THEME", "   "], "the theme name is empty; give a name, or --clear to show the automatic label again"),
        (["THEME", ""], "the theme name is empty; give a name, or --clear to show the automatic label again"),
        (["THEME", "x" * 257], "the theme name is 257 characters; the most is 256"),
        (["THEME", "Card\x1b[31m delays"], "the theme name contains control character U+001B at position 4; names "
                                           "are one line of printable text"),
        (["THEME", "Card\ndelays"], "the theme name contains control character U+000A at position 4; names are one "
                                    "line of printable text"),
        (["THEME", "Card", "--clear"], "give a NAME or --clear, not both"),
        (["THEME"], "give a NAME, or --clear to show the automatic label again"),
        (["THEME", "Card", "--actor", " "], "--actor is empty; say who names the theme"),
    ],
    ids=["unknown-id", "whitespace", "empty", "too-long", "escape", "newline", "both", "neither", "empty-actor"],
)  # fmt: skip
def test_a_name_that_cannot_be_used_is_one_line_and_changes_nothing(
    clustered: tuple[str, list[int]], monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    url, themes = clustered
    args = [str(themes[0]) if a == "THEME" else a for a in args]

    code, output = tagworker(url, monkeypatch, "cluster", "name", *args)

    assert code == 2 and "Traceback" not in output, output
    assert output.strip() == f"error: {message}"
    assert names(get_engine(url))[themes[0]] == (None, None, False)


def test_show_and_map_use_the_name_and_print_it_as_typed(
    clustered: tuple[str, list[int]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Brackets in a name are text, not rich markup (nor `:x:` an emoji); dollars are text, not a matplotlib formula."""
    url, themes = clustered
    longest = "L" * 256
    for theme, name in zip(themes, ["Card [/] [bold]late :x:", "Refunds $\\frac{$ per seat", longest], strict=True):
        code, output = tagworker(url, monkeypatch, "cluster", "name", str(theme), name, "--actor", "bo")
        assert code == 0 and f"is now named {name!r}" in output, output
    try:
        code, output = tagworker(url, monkeypatch, "cluster", "show", "--json")
        assert code == 0, output
        shown = {r["cluster_id"]: (r["label"], r["auto_label"], r["named_by"]) for r in json.loads(output)}
        assert shown[themes[0]] == ("Card [/] [bold]late :x:", auto_label(get_engine(url), themes[0]), "bo")
        assert shown[themes[2]][0] == longest

        code, output = tagworker(url, monkeypatch, "cluster", "show")
        assert code == 0, output
        # The table folds long cells over lines: the name, then its automatic label dimmed.
        assert "Card [/]" in output and "[bold]late :x:" in output and "auto: " in output, output
        assert "named by bo" in output, output

        code, output = tagworker(url, monkeypatch, "cluster", "map", "--out", str(tmp_path / "map.png"))
        assert code == 0, output
    finally:
        for theme in themes:
            assert tagworker(url, monkeypatch, "cluster", "name", str(theme), "--clear")[0] == 0


@pytest.mark.usefixtures("new_roles_dropped")
def test_the_dashboard_role_reads_the_names(engine: Engine) -> None:
    groups = store_groups(engine)
    run(engine)
    card = theme_per_group(engine, groups)[0]
    with engine.begin() as conn:
        conn.execute(text("UPDATE clusters SET name = 'Card delivery delays', named_by = 'ana', named_at = now() "
                          "WHERE id = :c"), {"c": card})  # fmt: skip
        grant_dashboard(conn, "themes_dash", "pw")
    dash = create_engine(engine.url.set(username="themes_dash", password="pw"))
    with dash.connect() as conn:
        row = conn.execute(text("SELECT label, auto_label, named_by FROM dashboard.clusters WHERE cluster_id = :c"),
                           {"c": card}).one()  # fmt: skip
        labels = {
            view: conn.scalar(
                text(f"SELECT DISTINCT cluster_label FROM dashboard.{view} WHERE cluster_id = :c"), {"c": card}
            )
            for view in ("feedback_clusters", "cluster_trend_daily")
        }
    dash.dispose()
    assert tuple(row) == ("Card delivery delays", auto_label(engine, card), "ana")
    assert labels == {"feedback_clusters": "Card delivery delays", "cluster_trend_daily": "Card delivery delays"}


@pytest.mark.parametrize(
    "values",
    ["name = E'Card\\ndelays', named_by = 'ana', named_at = now()",
     "name = ' Card', named_by = 'ana', named_at = now()", "name = 'Card'"],
    ids=["newline", "untrimmed", "without-who-and-when"],
)  # fmt: skip
def test_the_database_refuses_a_bad_name_from_any_writer(clustered: tuple[str, list[int]], values: str) -> None:
    url, themes = clustered
    with get_engine(url).begin() as conn, pytest.raises(IntegrityError, match="ck_clusters_name"):
        conn.execute(text(f"UPDATE clusters SET {values} WHERE id = :c"), {"c": themes[0]})


def test_a_run_cannot_write_a_name(clustered: tuple[str, list[int]]) -> None:
    url, themes = clustered
    with session_scope(get_engine(url)) as session, pytest.raises(ValueError, match=r"not \['name'\]"):
        save_cluster(session, cluster_id=themes[0], run_id=1, model_version_id=1, values={"name": None})
