"""Tests of tagifai.workloads.text.data: reading, validating, preparing and splitting projects."""

from __future__ import annotations

import csv
import functools
import http.server
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tagifai.config import SAMPLE_DATA_DIR
from tagifai.errors import TagifaiError
from tagifai.search import load_params_file
from tagifai.workloads.text import WORKLOAD, data
from tagifai.workloads.text.params import TextData, TextParams

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_PROJECTS = SAMPLE_DATA_DIR / "projects.json"
SAMPLE_TAGS = SAMPLE_DATA_DIR / "tags.json"

PROJECTS = [
    {"id": 1, "title": "Image Classifier", "description": "CNN on photos.", "tags": ["cv"]},
    {"id": 2, "title": "Chatbot", "description": "Talks back.", "tags": ["nlp", "pytorch"]},
    {"id": 3, "title": "Go Agent", "description": "Plays games.", "tags": ["rl"]},
]


def write_json(path: Path, payload: Any) -> Path:
    path.write_text(json.dumps(payload), encoding="utf-8")
    return path


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def make_projects(rows: list[tuple[str, list[str]]]) -> pd.DataFrame:
    """A load_projects-shaped frame from (text, tags) pairs."""
    return pd.DataFrame(
        {
            "id": list(range(1, len(rows) + 1)),
            "title": [text for text, _ in rows],
            "description": [""] * len(rows),
            "tags": [tags for _, tags in rows],
        }
    )


# --- load_projects -------------------------------------------------------------------


def test_load_projects_json(tmp_path):
    frame = data.load_projects(write_json(tmp_path / "projects.json", PROJECTS))
    assert list(frame.columns) == ["id", "title", "description", "tags"]
    assert frame["id"].tolist() == [1, 2, 3]
    assert frame["title"].tolist() == ["Image Classifier", "Chatbot", "Go Agent"]
    assert frame["tags"].tolist() == [["cv"], ["nlp", "pytorch"], ["rl"]]


def test_load_projects_csv_with_json_tags(tmp_path):
    path = write_csv(
        tmp_path / "projects.csv",
        ["id", "title", "description", "tags"],
        [
            ["10", "Chatbot", "Talks back.", '["nlp", " pytorch "]'],
            ["11", "Detector", "", '["cv"]'],
        ],
    )
    frame = data.load_projects(path)
    assert frame["id"].tolist() == [10, 11]
    assert frame["description"].tolist() == ["Talks back.", ""]
    assert frame["tags"].tolist() == [["nlp", "pytorch"], ["cv"]]


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_load_projects_single_tag_column(tmp_path, suffix):
    rows = [
        {"id": 1, "title": "Chatbot", "description": "Talks.", "tag": " nlp "},
        {"id": 2, "title": "Detector", "description": "Boxes.", "tag": "cv"},
    ]
    path = tmp_path / f"single{suffix}"
    if suffix == ".csv":
        write_csv(path, list(rows[0]), [list(row.values()) for row in rows])
    else:
        write_json(path, rows)
    frame = data.load_projects(path)
    assert frame["tags"].tolist() == [["nlp"], ["cv"]]
    assert frame["id"].tolist() == [1, 2]


def test_load_projects_missing_file(tmp_path):
    path = tmp_path / "nope.json"
    with pytest.raises(TagifaiError, match="file not found") as info:
        data.load_projects(path)
    assert "nope.json" in str(info.value)


def test_load_projects_not_utf8(tmp_path):
    path = tmp_path / "latin.json"
    path.write_bytes(b'[{"id": 1, "title": "caf\xe9"}]')
    with pytest.raises(TagifaiError) as info:
        data.load_projects(path)
    assert "latin.json" in str(info.value)
    assert "not UTF-8 text (byte 24)" in str(info.value)


def test_load_projects_invalid_json(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[\n{"id": 1,\n', encoding="utf-8")
    with pytest.raises(TagifaiError) as info:
        data.load_projects(path)
    assert "broken.json" in str(info.value)
    assert "invalid JSON at line 3" in str(info.value)


def test_load_projects_not_a_list(tmp_path):
    path = write_json(tmp_path / "obj.json", {"id": 1})
    with pytest.raises(TagifaiError, match="expected a JSON list of project objects") as info:
        data.load_projects(path)
    assert "obj.json" in str(info.value)


def test_load_projects_empty_file(tmp_path):
    path = write_json(tmp_path / "empty.json", [])
    with pytest.raises(TagifaiError, match=r"empty\.json: no projects in file"):
        data.load_projects(path)


@pytest.mark.parametrize("column", ["id", "title", "description", "tags"])
def test_load_projects_missing_column(tmp_path, column):
    rows = [{key: value for key, value in row.items() if key != column} for row in PROJECTS]
    path = write_csv(tmp_path / "cols.csv", list(rows[0]), [list(r.values()) for r in rows])
    with pytest.raises(TagifaiError) as info:
        data.load_projects(path)
    # Without "tags" the reader looks for the single-label "tag" column instead.
    expected = "tag" if column == "tags" else column
    assert str(info.value) == f"{path}: missing column {expected!r}"


def test_load_projects_missing_field_in_later_row(tmp_path):
    rows = [PROJECTS[0], {"id": 2, "title": "x", "tags": []}]
    path = write_json(tmp_path / "ragged.json", rows)
    with pytest.raises(TagifaiError) as info:
        data.load_projects(path)
    assert str(info.value) == f"{path}: row 2: missing field 'description'"


def test_load_projects_duplicate_id(tmp_path):
    rows = [*PROJECTS, {**PROJECTS[0], "title": "again"}]
    path = write_json(tmp_path / "dupes.json", rows)
    with pytest.raises(TagifaiError) as info:
        data.load_projects(path)
    message = str(info.value)
    assert "dupes.json" in message
    assert "row 4 (id 1)" in message
    assert "duplicate id 1 (first at row 1)" in message


@pytest.mark.parametrize("bad_id", ["abc", 1.5, True, None, "-3"])
def test_load_projects_id_not_int(tmp_path, bad_id):
    path = write_json(tmp_path / "ids.json", [PROJECTS[0], {**PROJECTS[1], "id": bad_id}])
    with pytest.raises(TagifaiError) as info:
        data.load_projects(path)
    message = str(info.value)
    assert "ids.json" in message
    assert f"row 2: id: expected an integer, got {bad_id!r}" in message


def test_load_projects_csv_id_not_int(tmp_path):
    path = write_csv(
        tmp_path / "ids.csv", ["id", "title", "description", "tags"], [["7x", "t", "d", "[]"]]
    )
    with pytest.raises(TagifaiError) as info:
        data.load_projects(path)
    assert "ids.csv" in str(info.value)
    assert "row 1: id: expected an integer, got '7x'" in str(info.value)


@pytest.mark.parametrize(("title", "description"), [("", ""), ("  ", None), (None, "\t")])
def test_load_projects_empty_text(tmp_path, title, description):
    row = {"id": 5, "title": title, "description": description, "tags": ["nlp"]}
    path = write_json(tmp_path / "blank.json", [PROJECTS[0], row])
    with pytest.raises(TagifaiError) as info:
        data.load_projects(path)
    message = str(info.value)
    assert "blank.json" in message
    assert "row 2 (id 5): empty text" in message


def test_load_projects_title_not_text(tmp_path):
    path = write_json(tmp_path / "title.json", [{**PROJECTS[0], "title": 42}])
    with pytest.raises(TagifaiError) as info:
        data.load_projects(path)
    assert "title.json" in str(info.value)
    assert "row 1 (id 1): title: expected text, got 42" in str(info.value)


@pytest.mark.parametrize("tags", ["nlp", {"a": 1}, ["nlp", 3], None])
def test_load_projects_tags_not_a_list(tmp_path, tags):
    path = write_json(tmp_path / "tags.json", [{**PROJECTS[0], "tags": tags}])
    with pytest.raises(TagifaiError) as info:
        data.load_projects(path)
    message = str(info.value)
    assert "tags.json" in message
    assert "row 1 (id 1): tags: expected a list of strings" in message
    assert repr(tags)[:20] in message


def test_load_projects_csv_tags_bad_json(tmp_path):
    path = write_csv(
        tmp_path / "p.csv", ["id", "title", "description", "tags"], [["3", "t", "d", '["nlp",']]
    )
    with pytest.raises(TagifaiError) as info:
        data.load_projects(path)
    assert str(info.value) == f"""{path}: row 1 (id 3): tags: not a JSON list: '["nlp",'"""


def test_load_projects_single_tag_blank(tmp_path):
    rows = [{"id": 1, "title": "t", "description": "d", "tag": " "}]
    path = write_json(tmp_path / "single.json", rows)
    with pytest.raises(TagifaiError) as info:
        data.load_projects(path)
    assert "single.json" in str(info.value)
    assert "row 1 (id 1): tag: expected a tag name, got ' '" in str(info.value)


# --- load_taxonomy -------------------------------------------------------------------


def test_load_taxonomy_list_format(tmp_path):
    path = write_json(
        tmp_path / "tags.json",
        [
            {"tag": "nlp", "aliases": ["natural-language"], "parents": []},
            {"tag": "transformers", "aliases": ["bert", "gpt"], "parents": ["nlp"]},
            {"tag": "cv"},
        ],
    )
    taxonomy = data.load_taxonomy(path)
    assert taxonomy.tags == ("nlp", "transformers", "cv")
    assert taxonomy.aliases == {
        "natural-language": "nlp",
        "bert": "transformers",
        "gpt": "transformers",
    }
    assert taxonomy.parents == {"nlp": (), "transformers": ("nlp",), "cv": ()}


def test_load_taxonomy_2020_dict_format(tmp_path):
    path = write_json(
        tmp_path / "tags.json",
        {
            "nlp": {"aliases": ["natural-language"], "parents": []},
            "transformers": {"aliases": ["bert"], "parents": ["nlp"]},
            "cv": None,
        },
    )
    taxonomy = data.load_taxonomy(path)
    assert taxonomy.tags == ("nlp", "transformers", "cv")
    assert taxonomy.aliases == {"natural-language": "nlp", "bert": "transformers"}
    assert taxonomy.parents == {"nlp": (), "transformers": ("nlp",), "cv": ()}


def test_load_taxonomy_unknown_parent_strict(tmp_path):
    rows = [{"tag": "nlp"}, {"tag": "transformers", "parents": ["nlp", "attention"]}]
    path = write_json(tmp_path / "tags.json", rows)
    with pytest.raises(TagifaiError) as info:
        data.load_taxonomy(path, strict_parents=True)
    assert str(info.value) == (
        f"{path}: tag 'transformers': parent 'attention' is not a tag in the file"
    )


def test_load_taxonomy_unknown_parent_lenient(tmp_path, caplog):
    rows = [{"tag": "nlp"}, {"tag": "transformers", "parents": ["nlp", "attention"]}]
    path = write_json(tmp_path / "tags.json", rows)
    with caplog.at_level(logging.WARNING, logger="tagifai.workloads.text.data"):
        taxonomy = data.load_taxonomy(path, strict_parents=False)
    assert taxonomy.parents["transformers"] == ("nlp",)
    assert "attention" in caplog.text


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([{"tag": "nlp"}, {"tag": "nlp"}], "row 2 (nlp): duplicate tag"),
        ([{"tag": ""}], "row 1: tag: expected a tag name, got ''"),
        ([{"tag": "nlp", "aliases": "x"}], "row 1 (nlp): aliases: expected a list of strings"),
        (
            [{"tag": "nlp", "aliases": ["a"]}, {"tag": "cv", "aliases": ["a"]}],
            "row 2 (cv): alias 'a' already belongs to 'nlp'",
        ),
        ([{"tag": "nlp", "aliases": ["cv"]}, {"tag": "cv"}], "alias 'cv' of 'nlp' is also a tag"),
    ],
)
def test_load_taxonomy_errors(tmp_path, rows, expected):
    path = write_json(tmp_path / "bad_tags.json", rows)
    with pytest.raises(TagifaiError) as info:
        data.load_taxonomy(path)
    assert str(info.value).startswith(f"{path}: ")
    assert expected in str(info.value)


# --- clean_text ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "lower", "stopwords", "expected"),
    [
        ("Hello, World!", True, False, "hello world"),
        ("Hello, World!", False, False, "Hello World"),
        ("GPT-2: text--generation (v2.0)", True, False, "gpt 2 text generation v2 0"),
        ("The model is trained on the data", True, True, "model trained data"),
        ("The Model IS trained", False, True, "Model trained"),
        ("  !!! ...  ", True, False, ""),
    ],
)
def test_clean_text(text, lower, stopwords, expected):
    assert data.clean_text(text, lower=lower, stopwords=stopwords) == expected


# --- prepare -------------------------------------------------------------------------


def test_prepare_aliases_taxonomy_exclusions_and_counts():
    taxonomy = data.Taxonomy(
        tags=("nlp", "cv", "python"),
        aliases={"natural-language": "nlp", "vision": "cv"},
        parents={"nlp": (), "cv": (), "python": ()},
    )
    projects = make_projects(
        [
            ("Chat Bot!", ["natural-language", "python"]),  # alias; python excluded
            ("Sentiment", ["nlp", "unknown-tag"]),  # unknown tag dropped
            ("Detector", ["vision"]),
            ("Segmenter", ["cv", "nlp"]),
            ("Scraper", ["python"]),  # only an excluded tag: dropped
            ("Mystery", ["unknown-tag"]),  # only a tag outside the taxonomy: dropped
        ]
    )
    params = TextData(min_tag_freq=1, exclude_tags=("python",))
    dataset = data.prepare(projects, taxonomy, params, source="mem")
    assert dataset.classes == ["cv", "nlp"]
    assert dataset.frame["id"].tolist() == [1, 2, 3, 4]
    assert dataset.frame["text"].tolist() == ["chat bot", "sentiment", "detector", "segmenter"]
    assert dataset.frame["tags"].tolist() == [["nlp"], ["nlp"], ["cv"], ["cv", "nlp"]]
    assert dataset.counts == {
        "projects_in": 6,
        "projects_kept": 4,
        "projects_dropped": 2,
        "tags_in": 6,
        "tags_after_taxonomy": 2,
        "tags_kept": 2,
        "tags_dropped_min_freq": 0,
    }
    assert dataset.source == "mem"


def test_prepare_min_tag_freq_drops_rare_tags_and_emptied_projects():
    projects = make_projects(
        [
            ("a", ["common", "rare"]),
            ("b", ["common"]),
            ("c", ["other"]),
            ("d", ["other", "common"]),
            ("e", ["rare-only"]),
        ]
    )
    params = TextData(min_tag_freq=2, exclude_tags=())
    dataset = data.prepare(projects, None, params)
    assert dataset.classes == ["common", "other"]
    assert dataset.frame["id"].tolist() == [1, 2, 3, 4]
    assert dataset.frame["tags"].tolist() == [
        ["common"],
        ["common"],
        ["other"],
        ["other", "common"],
    ]
    assert dataset.counts == {
        "projects_in": 5,
        "projects_kept": 4,
        "projects_dropped": 1,
        "tags_in": 4,
        "tags_after_taxonomy": 4,
        "tags_kept": 2,
        "tags_dropped_min_freq": 2,
    }


def test_prepare_add_parent_tags():
    taxonomy = data.Taxonomy(
        tags=("nlp", "transformers"),
        parents={"nlp": (), "transformers": ("nlp",)},
    )
    projects = make_projects([("bert", ["transformers"]), ("rnn", ["nlp"])])
    params = TextData(min_tag_freq=1, exclude_tags=(), add_parent_tags=True)
    dataset = data.prepare(projects, taxonomy, params)
    assert dataset.frame["tags"].tolist() == [["nlp", "transformers"], ["nlp"]]


def test_prepare_stopwords_and_case_follow_params():
    projects = make_projects([("The BEST Model", ["a"]), ("Of All", ["b"]), ("Fine Tuning", ["b"])])
    dataset = data.prepare(projects, None, TextData(min_tag_freq=1, lower=False, stopwords=True))
    # "Of All" is only stopwords: the project is left with no text and dropped.
    assert dataset.frame["text"].tolist() == ["BEST Model", "Fine Tuning"]
    assert dataset.frame["id"].tolist() == [1, 3]


@pytest.mark.parametrize(
    ("rows", "min_freq"),
    [
        ([("a", ["x"]), ("b", ["x"]), ("c", ["y"])], 2),  # y too rare: one class left
        ([("a", ["python"]), ("b", ["r"])], 1),  # both excluded by default
    ],
)
def test_prepare_fewer_than_two_classes(rows, min_freq):
    params = TextData(min_tag_freq=min_freq)
    with pytest.raises(TagifaiError) as info:
        data.prepare(make_projects(rows), None, params, source="tiny.json")
    message = str(info.value)
    assert message.startswith("tiny.json: only ")
    assert f"min_tag_freq={min_freq}" in message
    assert "need at least 2 classes" in message


# --- split ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample() -> tuple[data.Dataset, TextParams]:
    """The shipped sample, prepared with the repo's default params."""
    params = load_params_file(WORKLOAD, REPO_ROOT / "config" / "params.json")
    assert isinstance(params, TextParams)
    projects = data.load_projects(SAMPLE_PROJECTS)
    taxonomy = data.load_taxonomy(SAMPLE_TAGS, strict_parents=params.data.add_parent_tags)
    return data.prepare(projects, taxonomy, params.data, source=str(SAMPLE_PROJECTS)), params


def test_split_sizes_and_no_overlap(sample):
    dataset, params = sample
    splits = data.split(dataset, params.data, params.seed)
    ids = [set(part["id"]) for part in (splits.train, splits.val, splits.test)]
    sizes = [len(part) for part in (splits.train, splits.val, splits.test)]
    assert sum(sizes) == len(dataset.frame)
    assert sum(len(part) for part in ids) == len(dataset.frame)  # ids unique within splits
    assert set().union(*ids) == set(dataset.frame["id"])
    assert not ids[0] & ids[1] and not ids[0] & ids[2] and not ids[1] & ids[2]
    # Multi-label stratification trades a few rows of size for label balance.
    n = len(dataset.frame)
    assert abs(sizes[0] - params.data.train_size * n) <= 0.02 * n
    assert abs(sizes[1] - params.data.val_size * n) <= 0.02 * n
    assert min(sizes) > 0


def test_split_seeded(sample):
    dataset, params = sample
    first = data.split(dataset, params.data, params.seed)
    again = data.split(dataset, params.data, params.seed)
    other = data.split(dataset, params.data, params.seed + 1)
    for name in ("train", "val", "test"):
        pd.testing.assert_frame_equal(getattr(first, name), getattr(again, name))
    assert set(first.test["id"]) != set(other.test["id"])
    assert first.test_digest == again.test_digest != other.test_digest


def test_workload_split_uses_the_params_seed_and_sizes(sample):
    dataset, params = sample
    splits = WORKLOAD.split(dataset, params)
    expected = data.split(dataset, params.data, params.seed)
    for name in ("train", "val", "test"):
        pd.testing.assert_frame_equal(getattr(splits, name), getattr(expected, name))
    reseeded = WORKLOAD.split(dataset, params.model_copy(update={"seed": params.seed + 1}))
    assert set(reseeded.test["id"]) != set(splits.test["id"])


def test_split_every_class_in_train(sample):
    dataset, params = sample
    splits = data.split(dataset, params.data, params.seed)
    train_tags = {tag for row in splits.train["tags"] for tag in row}
    assert train_tags == set(dataset.classes)


@pytest.mark.parametrize("n", [*range(10, 30), 100, 200, 400, 410, 1000])
def test_split_any_row_count(sample, n):
    """Every size splits: at n = 200 the float 1 - 0.7 once asked for 201 rows."""
    dataset, params = sample
    frame = dataset.frame.sample(n=n, replace=n > len(dataset.frame), random_state=0)
    frame = frame.assign(id=range(n)).reset_index(drop=True)
    sized = data.Dataset(frame, dataset.classes, dataset.counts, "sized.json", "digest")
    if n < 100:  # few rows, many tags: stratifying may leave a split empty, said in one line
        try:
            splits = data.split(sized, params.data, params.seed)
        except TagifaiError as exc:
            assert f"sized.json: {n} projects are too few to split" in str(exc)
            assert "a split came out empty" in str(exc)  # n >= 10 passes the size check
            return
    else:
        splits = data.split(sized, params.data, params.seed)
    sizes = [len(part) for part in (splits.train, splits.val, splits.test)]
    assert sum(sizes) == n and min(sizes) > 0, sizes


def test_split_too_few_rows():
    projects = make_projects([(f"text {i}", ["a" if i % 2 else "b"]) for i in range(6)])
    dataset = data.prepare(projects, None, TextData(min_tag_freq=1), source="six.json")
    with pytest.raises(TagifaiError, match=r"six\.json: 6 projects are too few to split"):
        data.split(dataset, TextData(min_tag_freq=1), seed=0)


# --- the shipped sample --------------------------------------------------------------


def test_sample_data_is_big_enough_and_multi_label(sample):
    dataset, params = sample
    assert dataset.counts["projects_in"] >= 300
    assert len(dataset.classes) >= 8
    assert dataset.frame["id"].is_unique
    assert (dataset.frame["tags"].map(len) >= 2).any()
    assert all(set(tags) <= set(dataset.classes) for tags in dataset.frame["tags"])
    counts = pd.Series([tag for row in dataset.frame["tags"] for tag in row]).value_counts()
    assert params.data.min_tag_freq == 30  # the default of config/params.json
    assert counts.min() >= params.data.min_tag_freq


def test_sample_taxonomy_is_strictly_valid():
    taxonomy = data.load_taxonomy(SAMPLE_TAGS, strict_parents=True)
    assert len(taxonomy.tags) >= 8
    assert all(tag in taxonomy.tags for tag in taxonomy.aliases.values())


def test_workload_load_data_defaults_to_the_sample_and_records_the_taxonomy(sample):
    dataset, params = sample
    assert WORKLOAD.default_data() == (str(SAMPLE_PROJECTS), str(SAMPLE_TAGS))
    loaded = WORKLOAD.load_data(None, None, params)
    assert loaded.source == str(SAMPLE_PROJECTS)
    assert loaded.extra_source == str(SAMPLE_TAGS)
    assert loaded.digest == dataset.digest
    assert loaded.classes == dataset.classes
    # Without a taxonomy every tag is kept as written, so the prepared data differ.
    untaxed = WORKLOAD.load_data(str(SAMPLE_PROJECTS), None, params)
    assert untaxed.extra_source is None
    assert untaxed.source == str(SAMPLE_PROJECTS)
    assert untaxed.digest != dataset.digest


# --- URLs ----------------------------------------------------------------------------


@pytest.fixture
def sample_server() -> Iterator[str]:
    """The shipped sample data served over HTTP on 127.0.0.1; yields the base URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(SAMPLE_DATA_DIR))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_url_is_downloaded_once_then_read_from_the_cache(sample_server, tmp_path):
    url = f"{sample_server}/{SAMPLE_PROJECTS.name}?v=1"
    cached = data.fetch(url, cache_dir=tmp_path)
    assert cached.parent == tmp_path and cached.name.endswith(f"-{SAMPLE_PROJECTS.name}")
    assert cached.read_bytes() == SAMPLE_PROJECTS.read_bytes()
    assert [path.name for path in tmp_path.iterdir()] == [cached.name]  # no temporary left
    cached.write_text("[]")  # the cache is what a second call reads, not the server
    assert data.fetch(url, cache_dir=tmp_path).read_text() == "[]"


def test_url_that_fails_is_one_error_and_caches_nothing(sample_server, tmp_path):
    url = f"{sample_server}/missing.json"
    with pytest.raises(TagifaiError, match=r"missing\.json: cannot download \(File not found\)"):
        data.fetch(url, cache_dir=tmp_path)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())
