"""Issue 9, classes 5 and 6: text that looks like terminal markup, and hostile headers.

Markup: a category cell, a header, a ``--source``/``--workspace`` path with brackets, a planned case's fields and an
option value that look like rich markup (``[/bold]``, ``[red]x[/red]``, ``[link=...]``), an emoji code
(``:warning:``) or an escape sequence never crash validate, run or plan, are printed as the text they are (never
rendered), and no category or free-text value of the input is printed: reasons name the column, the rule and the
row's position. ``run`` never exits 1 after publishing.

Headers: case twins (``site_id``, ``SITE_ID``), names that differ only by blanks, exact duplicates are refused, exit
2, naming the columns, from CSV and Parquet; more than 1,000 columns are refused before any per-column work (a
100,000-column header in well under a second; asserted < 5 s wall in-process to stay robust on a loaded machine).

Almost everything runs in-process (typer's runner); one case runs the real CLI on the Prefect engine (~30 s)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import make_batch
from tests.hostile._support import (
    check_paths_exist,
    published_base,
    check_absent,
    check_accounting,
    check_no_traceback,
    check_registry_is_the_ledger,
    cli,
    cli_inprocess,
    dataset_rows,
    ledger,
    published,
    write_csv,
    write_parquet,
    write_source,
)

LOCAL = ("--engine", "local", "--no-models")
EXAMPLE_CASE = Path(__file__).resolve().parents[2] / "data" / "sample" / "planned_case.json"
ETIOLOGY_RULE = "etiology must be one of osteoporotic, malignant, traumatic"

# label -> (value put in etiology, the reason validate gives for its row)
MARKUP = {
    "close tag": ("[/bold]", ETIOLOGY_RULE),
    "open and close tags": ("[red]x[/red]", ETIOLOGY_RULE),
    "bare close tag": ("[/]", ETIOLOGY_RULE),
    "style": ("[bold magenta]x", ETIOLOGY_RULE),
    "link without a url": ("[link=foo]x[/link]", ETIOLOGY_RULE),
    "emoji code": (":warning:", ETIOLOGY_RULE),
    "escape sequence": ("\x1b[2J", "etiology holds a control character"),
}
GOOD = 2  # clean procedures before the hostile ones: hostile case i is source row GOOD + i + 1


def _encoded(value: str) -> list[str]:
    """A value as it may be written: plain, and as JSON writes it (escapes)."""
    return [value, json.dumps(value)[1:-1]]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A workspace with one published run (batch 1); tests work on copies."""
    return published_base(tmp_path_factory.mktemp("published-base"))


@pytest.fixture
def ws(base, tmp_path):
    folder, _ = base
    return Path(shutil.copytree(folder, tmp_path / "ws"))


# --- class 5: markup ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def markup_run(tmp_path_factory):
    """One CSV source: two clean procedures, then one per markup value in etiology; validated and run once."""
    root = tmp_path_factory.mktemp("markup")
    good = make_batch(GOOD, batch=1)
    procedures, levels = [good.procedures.astype(object)], [good.levels.astype(object)]
    for i, (value, _) in enumerate(MARKUP.values()):
        one = make_batch(1, batch=1, start=100 + i)
        p, lv = one.procedures.astype(object), one.levels.astype(object)
        p["etiology"] = value
        procedures.append(p)
        levels.append(lv)
    source = write_csv(root / "src", pd.concat(procedures, ignore_index=True), pd.concat(levels, ignore_index=True),
                       quote_all=True)
    checked = cli_inprocess("validate", "--source", source, "--show", "50")
    outcome = cli_inprocess("run", "--source", source, "--workspace", root / "ws", *LOCAL)
    return root, checked, outcome


@pytest.mark.parametrize("label", list(MARKUP), ids=list(MARKUP))
def test_markup_in_a_category_is_quarantined_by_position_and_never_echoed(markup_run, label):
    root, checked, outcome = markup_run
    value, reason = MARKUP[label]
    row = GOOD + list(MARKUP).index(label) + 1
    # validate: the row, the column and the rule; never the value
    assert checked.returncode == 0, checked.out
    check_no_traceback(checked)
    assert f"procedures row {row}: {reason}" in checked.flat
    # run: quarantined, published, exit 0
    assert outcome.returncode == 0, outcome.out
    check_no_traceback(outcome)
    manifest = outcome.manifest()
    check_accounting(manifest)
    assert manifest["status"] == "ok" and manifest["batches_loaded"] == [1]
    assert manifest["tables"]["procedures"]["rows_quarantined"] == len(MARKUP)
    assert published(root / "ws") == manifest["run_id"]
    assert len(dataset_rows(root / "ws")) == GOOD
    check_registry_is_the_ledger(root / "ws")
    ledger_text = json.dumps(ledger(root / "ws"))
    manifest_text = outcome.manifest_path().read_text(encoding="utf-8")
    for text in (checked.out, outcome.out, manifest_text, ledger_text):
        check_absent(text, *_encoded(value))
    if label == "emoji code":
        check_absent(checked.out + outcome.out, "\u26a0")  # not rendered as the emoji either
    check_paths_exist(outcome, root / "ws" / "runs")


def test_a_markup_link_to_a_url_is_refused_as_an_identifier_without_echo(tmp_path, ws, base):
    batch = make_batch(3, batch=2, start=20)
    procedures = batch.procedures.astype(object).copy()
    procedures.loc[1, "etiology"] = "[link=http://x.example]y[/link]"
    source = write_csv(tmp_path / "src", procedures, batch.levels)
    checked = cli_inprocess("validate", "--source", source)
    outcome = cli_inprocess("run", "--source", source, "--workspace", ws, *LOCAL)
    for result in (checked, outcome):
        assert result.returncode == 2, result.out
        check_no_traceback(result)
        assert "refused: batch refused: it carries identifiers" in result.flat
        assert "procedures.etiology: URL (found in 1 row by value)" in result.flat
        check_absent(result.out, "[link=http://x.example]y[/link]", "http://x.example", "x.example")
    manifest = outcome.manifest()
    assert manifest["status"] == "refused"
    check_accounting(manifest)
    assert published(ws) == base[1]
    check_absent(json.dumps(ledger(ws)), "x.example")


@pytest.mark.parametrize("header", [
    "[/red]x",
    "[link=foo]bar",
    pytest.param(":warning:"),
], ids=["close tag", "link", "emoji code"])
def test_a_markup_header_is_dropped_and_printed_as_the_text_it_is(tmp_path, ws, header):
    batch = make_batch(3, batch=2, start=20)
    procedures = batch.procedures.copy()
    procedures[header] = "free text FT-778"
    source = write_csv(tmp_path / "src", procedures, batch.levels)
    checked = cli_inprocess("validate", "--source", source)
    outcome = cli_inprocess("run", "--source", source, "--workspace", ws, *LOCAL)
    for result in (checked, outcome):
        assert result.returncode == 0, result.out
        check_no_traceback(result)
        assert header in result.out, result.out  # the column name, literally
        check_absent(result.out, "FT-778", "\u26a0")
    manifest = outcome.manifest()
    check_accounting(manifest)
    assert manifest["status"] == "ok" and manifest["tables"]["procedures"]["columns_dropped"] == [header]
    assert published(ws) == manifest["run_id"]


def test_an_escape_sequence_in_a_header_is_never_written_raw_to_the_terminal(tmp_path, ws):
    batch = make_batch(3, batch=2, start=20)
    procedures = batch.procedures.copy()
    procedures["\x1b[31mred"] = 1
    source = write_csv(tmp_path / "src", procedures, batch.levels)
    checked = cli_inprocess("validate", "--source", source)
    outcome = cli_inprocess("run", "--source", source, "--workspace", ws, *LOCAL)
    for result in (checked, outcome):
        assert result.returncode == 0, result.out
        check_no_traceback(result)
        check_absent(result.out, "\x1b")
    check_accounting(outcome.manifest())


def test_an_escape_sequence_in_the_source_path_is_never_written_raw_to_the_terminal(tmp_path):
    """The path reaches the table's title and the status line: CSI and OSC sequences are shown as \\x1b, not run."""
    source = write_csv(tmp_path / "esc\x1b[31mRED\x1b]0;PWNED\x07", *_frames_of(make_batch(3, batch=1)))
    for args in (("validate", "--source", source),
                 ("run", "--source", source, "--workspace", tmp_path / "ws", "--engine", "local", "--no-models")):
        outcome = cli_inprocess(*args)
        assert outcome.returncode == 0, outcome.out
        check_no_traceback(outcome)
        check_absent(outcome.out, "\x1b", "\x07")
        if args[0] == "validate":  # the title names the source
            assert "esc\\x1b[31mRED" in outcome.out


def _frames_of(batch):
    return batch.procedures, batch.levels


def test_bracketed_source_and_workspace_paths_are_printed_literally(tmp_path):
    batch = make_batch(3, batch=1)
    procedures = batch.procedures.astype(object).copy()
    procedures.loc[2, "etiology"] = "[/bold]"  # one quarantined row, so the quarantine folder exists too
    source = write_csv(tmp_path / "exports[2026]" / "[/red]", procedures, batch.levels)
    ws = tmp_path / "ws[/bold]" / "[red]w[/red]"
    checked = cli_inprocess("validate", "--source", source)
    assert checked.returncode == 0, checked.out
    assert f"validate {source} (dry run, nothing written)" in checked.flat
    outcome = cli_inprocess("run", "--source", source, "--workspace", ws, *LOCAL)
    assert outcome.returncode == 0, outcome.out
    for result in (checked, outcome):
        check_no_traceback(result)
        check_absent(result.out, "\u26a0")
    manifest = outcome.manifest()  # the printed manifest path exists as printed
    check_accounting(manifest)
    assert manifest["status"] == "ok"
    assert f"registry:   {ws / 'registry'}" in outcome.out
    assert published(ws) == manifest["run_id"]
    check_paths_exist(outcome, tmp_path)
    missing = cli_inprocess("run", "--source", tmp_path / "gone[/bold]" / "[x]", "--workspace", ws, *LOCAL)
    assert missing.returncode == 2, missing.out
    check_no_traceback(missing)
    assert f"refused: source not found: {tmp_path / 'gone[/bold]' / '[x]'}" in missing.flat
    assert missing.manifest()["status"] == "refused"
    assert published(ws) == manifest["run_id"]


def test_emoji_codes_in_paths_are_printed_literally(tmp_path):
    source = write_source(tmp_path / ":smile:" / "src", make_batch(3, batch=1))
    ws = tmp_path / ":smile:" / "ws"
    outcome = cli_inprocess("run", "--source", source, "--workspace", ws, *LOCAL)
    assert outcome.returncode == 0, outcome.out
    check_no_traceback(outcome)
    assert str(ws / "registry") in outcome.out
    manifest = outcome.manifest()
    check_accounting(manifest)
    assert published(ws) == manifest["run_id"]
    check_absent(outcome.out, "\U0001f604")


def test_markup_everywhere_on_the_prefect_engine_publishes_and_exits_0(tmp_path):
    """The real CLI, Prefect engine (its logging and state messages too): bracketed paths, a markup header and a
    markup category; exit 0 once published (never exit 1 after publishing)."""
    batch = make_batch(4, batch=1)
    procedures = batch.procedures.astype(object).copy()
    procedures.loc[1, "etiology"] = "[/italic]"
    procedures.loc[2, "anesthesia"] = "[red]x[/red]"
    procedures["[/red]x"] = "[blink]FT-991[/blink]"
    source = write_csv(tmp_path / "exports[2026]" / "[/red]", procedures, batch.levels)
    ws = tmp_path / "ws[/bold]" / "[red]w"
    outcome = cli("run", "--source", source, "--workspace", ws, "--no-models")
    assert outcome.returncode == 0, outcome.out
    check_no_traceback(outcome)
    manifest = outcome.manifest()
    check_accounting(manifest)
    assert manifest["status"] == "ok" and manifest["tables"]["procedures"]["rows_quarantined"] == 2
    assert manifest["tables"]["procedures"]["columns_dropped"] == ["[/red]x"]
    assert published(ws) == manifest["run_id"]
    assert "procedures rows quarantined by rule: category 2" in outcome.flat
    check_absent(outcome.out, "[/italic]", "[red]x[/red]", "FT-991", "[blink]")
    check_paths_exist(outcome, ws / "runs")


def _case(tmp_path: Path, change) -> Path:
    data = json.loads(EXAMPLE_CASE.read_text(encoding="utf-8"))
    change(data)
    path = tmp_path / "case.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.mark.parametrize(("label", "change", "said", "hidden"), [
    ("category value", lambda d: d.update(etiology="[/bold]"), ETIOLOGY_RULE, "[/bold]"),
    ("level category value", lambda d: d["levels"][0].update(morphology="[red]x[/red]"),
     "morphology must be one of", "[red]x[/red]"),
    ("field name", lambda d: d.update({"[/bold]": 1}), "'[/bold]' is not a field of a planned case", None),
    ("level field name", lambda d: d["levels"][1].update({"[link=foo]x": 1}), "'[link=foo]x' is not a field", None),
], ids=["category value", "level category value", "field name", "level field name"])
def test_markup_in_a_planned_case_is_refused_naming_the_field(tmp_path, label, change, said, hidden):
    case = _case(tmp_path, change)
    outcome = cli_inprocess("plan", "--case", case, "--workspace", tmp_path / "no-models")
    assert outcome.returncode == 2, outcome.out
    check_no_traceback(outcome)
    assert "refused: case.json refused:" in outcome.flat and said in outcome.flat
    if hidden:
        check_absent(outcome.out, hidden)
    assert not case.with_suffix(".plan.html").exists()
    assert published(tmp_path / "no-models") is None


def test_a_bracketed_case_path_and_option_value_are_printed_literally(tmp_path):
    missing = tmp_path / "plans[2026]" / "[/bold].json"
    outcome = cli_inprocess("plan", "--case", missing, "--workspace", tmp_path / "ws")
    assert outcome.returncode == 2, outcome.out
    check_no_traceback(outcome)
    assert f"refused: cannot read the case file {missing} as JSON" in outcome.flat
    bad = cli_inprocess("run", "--source", tmp_path, "--workspace", tmp_path / "ws", "--engine", "[/bold]")
    assert bad.returncode == 2, bad.out
    check_no_traceback(bad)
    assert "Invalid value for '--engine'" in bad.flat and "'[/bold]' is not one of" in bad.flat
    assert published(tmp_path / "ws") is None and not (tmp_path / "ws" / "registry").exists()


# --- class 6: headers -----------------------------------------------------------------------------------------

TWIN_VALUE = "TWIN-VALUE-4417"


def _with_twin(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """``frame`` with one more column called ``name`` (which may repeat a name already there)."""
    extra = pd.DataFrame({name: [TWIN_VALUE] * len(frame)})
    return pd.concat([frame.reset_index(drop=True), extra], axis=1)


TWINS = [
    # (id, format, table, how the header is built, what the message says)
    ("csv case twin", "csv", "procedures", lambda f: _with_twin(f, "SITE_ID"),
     "table procedures: columns site_id and SITE_ID are the same column in another case; keep exactly one of each"),
    ("csv exact duplicate", "csv", "procedures", lambda f: _with_twin(f, "etiology"),
     "table procedures: column etiology appears 2 times; keep exactly one of each"),
    ("csv blanks", "csv", "procedures", lambda f: _with_twin(f.rename(columns={"etiology": " etiology"}), "etiology"),
     "columns ' etiology' and etiology are the same column with blanks around the name"),
    ("csv levels case twin", "csv", "levels", lambda f: _with_twin(f, "Vertebra"),
     "table levels: columns vertebra and Vertebra are the same column in another case"),
    ("csv markup twin", "csv", "procedures", lambda f: _with_twin(_with_twin(f, "[/bold]x"), "[/BOLD]X"),
     "columns [/bold]x and [/BOLD]X are the same column in another case"),
    ("parquet case twin", "parquet", "procedures", lambda f: _with_twin(f, "SITE_ID"),
     "table procedures: columns site_id and SITE_ID are the same column in another case"),
    ("parquet levels case twin", "parquet", "levels", lambda f: _with_twin(f, "VERTEBRA"),
     "table levels: columns vertebra and VERTEBRA are the same column in another case"),
    pytest.param("parquet exact duplicate", "parquet", "procedures", lambda f: _with_twin(f, "site_id"),
                 "table procedures: column site_id appears 2 times", id="parquet exact duplicate"),
]


def _write(fmt: str, folder: Path, procedures: pd.DataFrame, levels: pd.DataFrame) -> Path:
    if fmt == "csv":
        return write_csv(folder, procedures, levels)
    tables = {}
    for name, frame in (("procedures", procedures), ("levels", levels)):
        unique = frame.set_axis([f"c{i}" for i in range(frame.shape[1])], axis=1)
        tables[name] = pa.Table.from_pandas(unique, preserve_index=False).rename_columns(
            [str(c) for c in frame.columns])  # twins allowed in a Parquet schema
    return write_parquet(folder, tables["procedures"], tables["levels"])


@pytest.mark.parametrize(("label", "fmt", "table", "build", "message"),
                         [t if hasattr(t, "marks") else pytest.param(*t, id=t[0]) for t in TWINS])
def test_twin_and_duplicate_columns_are_refused_naming_them(tmp_path, ws, base, label, fmt, table, build, message):
    batch = make_batch(3, batch=2, start=20)
    frames = {"procedures": batch.procedures, "levels": batch.levels}
    frames[table] = build(frames[table])
    source = _write(fmt, tmp_path / "src", frames["procedures"], frames["levels"])
    before = ledger(ws)
    checked = cli_inprocess("validate", "--source", source)
    outcome = cli_inprocess("run", "--source", source, "--workspace", ws, *LOCAL)
    for result in (checked, outcome):
        assert result.returncode == 2, result.out
        check_no_traceback(result)
        assert message in result.flat, result.out
        check_absent(result.out, TWIN_VALUE)
    assert "nothing was registered; manifest:" in outcome.flat
    manifest = outcome.manifest()
    assert manifest["status"] == "refused" and message in " ".join(manifest["reason"].split())
    check_accounting(manifest)
    assert published(ws) == base[1]
    assert ledger(ws)["batches"] == before["batches"]
    check_registry_is_the_ledger(ws)


def test_twin_headers_that_look_like_identifier_values_are_named_by_position(tmp_path, ws, base):
    batch = make_batch(3, batch=2, start=20)
    procedures = _with_twin(_with_twin(batch.procedures, "jane.doe@example.com"), "JANE.DOE@example.com")
    source = write_csv(tmp_path / "src", procedures, batch.levels)
    outcome = cli_inprocess("run", "--source", source, "--workspace", ws, *LOCAL)
    assert outcome.returncode == 2, outcome.out
    check_no_traceback(outcome)
    assert "column 25 (name withheld) and column 26 (name withheld)" in outcome.flat
    check_absent(outcome.out.lower(), "jane.doe", "example.com")
    manifest = outcome.manifest()
    check_accounting(manifest)
    check_absent(json.dumps(manifest).lower(), "jane.doe")
    assert published(ws) == base[1]


def _wide_csv(folder: Path, n_columns: int) -> Path:
    """procedures.csv with ``n_columns`` columns (the contract's, then x0, x1, ... empty) and three rows."""
    batch = make_batch(3, batch=2, start=20)
    source = write_csv(folder, batch.procedures, batch.levels)
    lines = (source / "procedures.csv").read_text(encoding="utf-8").splitlines()
    extra = n_columns - len(batch.procedures.columns)
    lines[0] += "".join(f",x{i}" for i in range(extra))
    lines[1:] = [line + "," * extra for line in lines[1:]]
    (source / "procedures.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return source


def _timed(*args):
    start = time.perf_counter()
    outcome = cli_inprocess(*args)
    return outcome, time.perf_counter() - start


def _check_wide_refusal(label: str, source: Path, ws: Path, base) -> None:
    """validate and run refuse a 100,000-column table in under 5 s, naming the count, listing no column; the
    published run stays."""
    checked, validate_seconds = _timed("validate", "--source", source)
    outcome, run_seconds = _timed("run", "--source", source, "--workspace", ws, *LOCAL)
    print(f"100,000-column {label}: validate refused in {validate_seconds:.3f} s, run in {run_seconds:.3f} s")
    for result, seconds in ((checked, validate_seconds), (outcome, run_seconds)):
        assert result.returncode == 2, result.out
        check_no_traceback(result)
        assert "refused: table procedures has 100000 columns; at most 1000 are accepted" in result.flat
        assert seconds < 5, seconds
        assert "x12345" not in result.out  # no column (x0 ... x99969 are all there) is listed one by one
    manifest = outcome.manifest()
    assert manifest["status"] == "refused"
    check_accounting(manifest)
    assert published(ws) == base[1]


def test_a_100000_column_csv_header_is_refused_at_once(tmp_path, ws, base):
    _check_wide_refusal("CSV", _wide_csv(tmp_path / "src", 100_000), ws, base)


def test_a_100000_column_parquet_schema_is_refused_at_once(tmp_path, ws, base):
    batch = make_batch(3, batch=2, start=20)
    contract = pa.Table.from_pandas(batch.procedures, preserve_index=False)
    extra = 100_000 - contract.num_columns
    nulls = pa.nulls(3, pa.int8())
    wide = pa.Table.from_arrays(list(contract.columns) + [nulls] * extra,
                                names=contract.column_names + [f"x{i}" for i in range(extra)])
    folder = tmp_path / "src"
    folder.mkdir()
    pq.write_table(wide, folder / "procedures.parquet")
    pq.write_table(pa.Table.from_pandas(batch.levels, preserve_index=False), folder / "levels.parquet")
    _check_wide_refusal("Parquet", folder, ws, base)


@pytest.mark.parametrize(("columns", "refused"), [(1000, False), (1001, True)], ids=["1000 taken", "1001 refused"])
def test_the_column_limit_is_1000(tmp_path, columns, refused):
    source = _wide_csv(tmp_path / "src", columns)
    outcome, seconds = _timed("validate", "--source", source)
    check_no_traceback(outcome)
    if refused:
        assert outcome.returncode == 2, outcome.out
        assert f"table procedures has {columns} columns; at most 1000 are accepted" in outcome.flat
        assert seconds < 5, seconds
    else:
        assert outcome.returncode == 0, outcome.out
        assert "refused:" not in outcome.out and "x975" in outcome.out  # the unknown columns are dropped
