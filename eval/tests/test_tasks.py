"""Tests of the RULER-style task builders (eval/tasks.py) on the CPU, without torch.

A stub tokenizer splits text into words and punctuation, each with the whitespace before it (as
byte-level BPE tokenizers do), so prompts can be decoded and checked exactly.
"""
import collections
import os
import re
import sys

import pytest

sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # eval/, last
import tasks  # noqa: E402


class StubTokenizer:
    PATTERN = re.compile(r"\s*[A-Za-z0-9]+|\s*[^\sA-Za-z0-9]|\s+")

    def __init__(self):
        self.vocab, self.words = {}, []

    def _id(self, piece):
        if piece not in self.vocab:
            self.vocab[piece] = len(self.words)
            self.words.append(piece)
        return self.vocab[piece]

    def with_offsets(self, text):
        ms = list(self.PATTERN.finditer(text))
        return [self._id(m.group()) for m in ms], [m.start() for m in ms]

    def encode(self, text):
        return self.with_offsets(text)[0]

    def decode(self, ids):
        return "".join(self.words[i] for i in ids)


TOK = StubTokenizer()
TEXTS = tasks.load_texts()
# Two "novels": Emma's two halves, so that prompts rotate over several texts.
_EMMA = TEXTS["emma"]
_MID = _EMMA.index("\n\n", len(_EMMA) // 2)
CORPUS = tasks.Corpus.from_texts({"emma_a": _EMMA[:_MID], "emma_b": _EMMA[_MID + 2:]}, TOK.with_offsets)
TEMPLATE = ("<|user|>\n", "\n<|assistant|>\n")
BUILDER = tasks.Builder(CORPUS, TOK.encode, TEMPLATE, seed=3)


def build(task, length=3000, index=0):
    p = BUILDER.build(task, length, index)
    return p, TOK.decode(p.ids(CORPUS))


def test_texts_are_real_prose():
    assert len(_EMMA.split()) > 150_000  # Emma: about 157,000 words
    paras = _EMMA.split("\n\n")
    assert len(set(paras)) > 0.98 * len(paras)  # no filler repeated over and over
    assert "_" not in _EMMA
    assert not any(re.fullmatch(r"[A-Z .,]+", p) for p in paras)  # headings dropped
    assert len(CORPUS.vocabulary) > 3000


@pytest.mark.parametrize("task", tasks.TASKS)
@pytest.mark.parametrize("length", [700, 2048, 8192])
def test_every_prompt_has_exactly_the_length(task, length):
    p, text = build(task, length, index=length % 7)
    assert len(p.ids(CORPUS)) == length
    assert text.startswith(TEMPLATE[0]) and TEMPLATE[1] in text
    assert p.max_new_tokens == tasks.MAX_NEW_TOKENS[task]


@pytest.mark.parametrize("task", [t for t in tasks.TASKS if t not in ("cwe", "fwe")])
def test_needles_and_answers(task):
    p, text = build(task, 4000, index=5)
    body = text[:text.rindex("\n\n")]  # without the question, the template tail and the prefix
    for a in p.answers:
        assert a in body
    if task == "passkey":
        assert body.count(p.answers[0]) == 2 and 5 <= len(p.answers[0]) <= 7
    elif task == "vt":
        assert len(p.answers) == 5 and len(re.findall(r"VAR [A-Z]{5} =", body)) == 5
        assert all(re.fullmatch(r"[A-Z]{5}", v) for v in p.answers)
    else:
        needles = 1 if task.startswith("niah_single") else 4
        assert body.count("One of the special magic") == needles
        assert len(p.answers) == (1 if task.startswith("niah_single") or task == "niah_multikey" else 4)
        if task == "niah_single_uuid":
            assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", p.answers[0])
        if task == "niah_single_word":
            assert p.answers[0] in CORPUS.vocabulary
        if task in ("niah_single_number", "niah_multikey", "niah_multivalue", "niah_multiquery"):
            assert all(len(a) == 7 for a in p.answers)
        if task == "niah_multikey":  # four keys, one asked: the asked key appears in the question
            keys = re.findall(r"numbers for ([\w-]+) is:", body)
            assert len(set(keys)) == 4 and keys.count(keys[0]) == 1
            question = text[text.rindex("\n\n"):]
            assert sum(k in question for k in keys) == 1
        if task == "niah_multiquery":
            question = text[text.rindex("\n\n"):]
            assert all(k in question for k in re.findall(r"numbers for ([\w-]+) is:", body))
        if task == "niah_multivalue":
            assert len(set(re.findall(r"numbers for ([\w-]+) is:", body))) == 1


@pytest.mark.parametrize("task", ["passkey", "niah_multikey", "vt"])
def test_haystack_is_sentences_of_one_novel_and_needles_sit_between_sentences(task):
    p = BUILDER.build(task, 3000, 2)
    hay = [s for s in p.segments if s[0] == "hay"]
    assert len({s[1] for s in hay}) == 1
    # The slices are consecutive pieces of the novel, each starting at a sentence boundary.
    for a, b in zip(hay, hay[1:]):
        assert a[3] == b[2]
    starts = set(CORPUS.starts[hay[0][1]])
    for s in hay:
        assert s[2] in starts
    assert all(0.0 <= d <= 1.0 for d in p.depths)
    if task == "vt":  # the chain's hops come in order
        assert p.depths == sorted(p.depths)
        _, text = build(task, 3000, 2)
        names = re.findall(r"VAR ([A-Z]{5}) =", text)
        assert names == p.answers


def test_depths_spread_over_the_haystack():
    depths = [BUILDER.build("niah_single_number", 2500, i).depths[0] for i in range(40)]
    assert min(depths) < 0.15 and max(depths) > 0.85


def test_prompts_rotate_over_the_novels():
    assert {BUILDER.build("passkey", 1500, i).book for i in range(4)} == set(CORPUS.names)


def test_a_haystack_longer_than_its_novel_comes_from_the_next_that_fits():
    short = dict(CORPUS.books)
    short["emma_a"] = short["emma_a"][:5000]  # one novel too short for the prompt, the other not
    corpus = tasks.Corpus.from_json({**CORPUS.to_json(), "books": short})
    builder = tasks.Builder(corpus, TOK.encode, TEMPLATE, seed=3)
    books = {builder.build("passkey", 20000, i).book for i in range(4)}
    assert books == {"emma_b"}
    assert len(builder.build("passkey", 20000, 0).ids(corpus)) == 20000
    assert {builder.build("passkey", 3000, i).book for i in range(4)} == set(CORPUS.names)


def test_cwe_and_fwe_lists():
    p, text = build("cwe", 6000, 1)
    body = text[text.index("\n1. "):text.rindex("\n\n")]
    counts = collections.Counter(re.findall(r"\n\d+\. ([a-z]+)", body))
    assert all(counts[w] == 30 for w in p.answers) and len(p.answers) == 10
    p, text = build("cwe", 1000, 1)
    counts = collections.Counter(re.findall(r"\n\d+\. ([a-z]+)", text))
    assert len({counts[w] for w in p.answers}) == 1 and counts[p.answers[0]] >= 4
    assert max(c for w, c in counts.items() if w not in p.answers) == 3
    p, text = build("fwe", 6000, 1)
    body = text[:text.rindex("\n\n")]
    counts = collections.Counter(re.findall(r"[a-z]+", body.split("\n\n", 2)[-1]))
    top = [w for w, _ in counts.most_common(3)]
    assert top == p.answers


def test_deterministic_and_seeded():
    a = BUILDER.build("niah_multiquery", 2000, 3)
    assert a == BUILDER.build("niah_multiquery", 2000, 3)
    assert a.answers != BUILDER.build("niah_multiquery", 2000, 4).answers
    other = tasks.Builder(CORPUS, TOK.encode, TEMPLATE, seed=4)
    assert a.answers != other.build("niah_multiquery", 2000, 3).answers


def test_a_prompt_too_short_for_its_task_is_refused():
    with pytest.raises(ValueError, match="do not fit"):
        BUILDER.build("niah_multiquery", 100, 0)


def test_answer_check():
    assert tasks.is_correct("The pass key is 71432.", ["71432"])
    assert not tasks.is_correct("The pass key is 714321.", ["71432"])  # inside a longer number
    assert tasks.is_correct("are: 1234567, 2345678 and 3456789", ["3456789", "1234567", "2345678"])
    assert not tasks.is_correct("are: 1234567 and 2345678", ["3456789", "1234567", "2345678"])
    assert tasks.score("are: 1234567 and 2345678", ["3456789", "1234567", "2345678"]) == pytest.approx(2 / 3)
    assert tasks.is_correct("They are: ABCDE, FGHIJ.", ["abcde", "fghij"])
    assert not tasks.is_correct("carriages", ["carriage"])


def test_split_template():
    before, after = tasks.split_template(lambda m: "<s>[user]" + m + "[/user][bot]")
    assert (before, after) == ("<s>[user]", "[/user][bot]")


def test_corpus_round_trips_through_json():
    again = tasks.Corpus.from_json(CORPUS.to_json())
    p = BUILDER.build("passkey", 1000, 1)
    assert p.ids(again) == p.ids(CORPUS)


def test_sentence_boundaries_skip_abbreviations_and_lower_case():
    text = 'He came. She went! "Yes," said Mrs. Bennet. A word\n\nNext para. and more. J. Smith came.'
    starts = [text[i:i + 4] for i in range(len(text)) if tasks._sentence_starts_at(text, i)]
    assert starts == [" She", ' "Ye', " A w", " J. "]
