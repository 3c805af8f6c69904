"""Tests of the retrieval task builders (eval/tasks.py) on the CPU, without torch.

A whitespace tokenizer stub counts one token per word, so the input lengths can be checked
exactly; a second stub (one token per 4 characters) checks the margin with another tokenizer.
"""
import math
import os
import re
import sys

import pytest

sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # eval/, last
import tasks  # noqa: E402


def words(text):
    return len(text.split())


def chars4(text):
    return math.ceil(len(text) / 4)


def chat(message):
    """A stand-in chat template: special markers around the user message."""
    return "<|user|>\n" + message + "\n<|assistant|>\n"


HAY = tasks.default_haystack()


def body_of(sample):
    """The haystack part of the user message (between the intro and the question)."""
    parts = sample.user_message.split("\n\n")
    return "\n\n".join(parts[1:-1])


def test_text_is_real_prose_without_repeats():
    paras = tasks.load_paragraphs()
    assert len(HAY.words) > 150_000  # Emma: about 157,000 words
    assert len(set(paras)) > 0.98 * len(paras)  # no filler repeated over and over
    assert not any("_" in p for p in paras)  # italics marks removed
    assert not any(re.fullmatch(r"[A-Z .,]+", p) for p in paras)  # headings dropped


@pytest.mark.parametrize("task", tasks.TASKS)
@pytest.mark.parametrize("target", [300, 1000, 4096])
@pytest.mark.parametrize("depth", tasks.DEPTHS)
def test_length_is_exact_with_a_word_tokenizer(task, target, depth):
    s = tasks.build(task, target, depth, words, seed=3)
    assert s.n_tokens == words(s.text) == target


@pytest.mark.parametrize("task", tasks.TASKS)
@pytest.mark.parametrize("target", [512, 8192])
def test_length_within_margin_with_another_tokenizer_and_template(task, target):
    s = tasks.build(task, target, 0.5, chars4, chat, seed=1)
    assert s.text.startswith("<|user|>\n") and s.text.endswith("<|assistant|>\n")
    assert s.n_tokens == chars4(s.text)
    assert target - 3 <= s.n_tokens <= target  # one more word would not fit


@pytest.mark.parametrize("task", tasks.TASKS)
def test_needle_appears_once(task):
    s = tasks.build(task, 2000, 0.5, words, seed=5)
    assert s.text.count(s.needle) == 1
    if task == "passkey":
        assert s.text.count(s.answer) == 2  # "The pass key is X. Remember it. X is the pass key."
        assert 5 <= len(s.answer) <= 7
    else:
        assert s.text.count(s.answer) == 1
        assert len(s.answer) == 7
        assert s.text.count(s.keys[0]) == 2  # the needle and the question
        for key in s.keys[1:]:
            assert s.text.count(key) == 1
    assert s.answer[0] != "0"


NEEDLE_RE = r"(?:One of the special magic numbers for [\w-]+ is: \d+\.|The pass key is \d+\. Remember it\. \d+ is the pass key\.) ?"


def window_start(sample):
    """Where the sample's haystack starts in the text (the needles taken out)."""
    got = re.sub(NEEDLE_RE, "", body_of(sample)).split()
    assert len(got) == sample.haystack_words
    hits = [p for p in HAY.para_starts if HAY.words[p:p + len(got)] == got]
    assert len(hits) == 1  # a contiguous slice of the text, starting at a paragraph
    return hits[0]


@pytest.mark.parametrize("task", tasks.TASKS)
@pytest.mark.parametrize("depth", tasks.DEPTHS)
def test_needle_sits_at_the_nearest_sentence_boundary(task, depth):
    s = tasks.build(task, 3000, depth, words, seed=7)
    body, n = body_of(s), s.haystack_words
    # needle_word counts the haystack words before the asked needle.
    before = re.sub(NEEDLE_RE, "", body[:body.index(s.needle)])
    assert words(before) == s.needle_word
    # It is a sentence boundary, and none is nearer to the requested depth.
    start, goal = window_start(s), round(depth * n)
    assert s.needle_word == n or HAY.is_boundary(start + s.needle_word)
    nearest = min(abs(j - goal) for j in range(n + 1) if j == n or HAY.is_boundary(start + j))
    assert abs(s.needle_word - goal) == nearest
    assert abs(s.actual_depth - depth) < 0.05
    if depth == 0.0:
        assert body.startswith(s.needle)
    if depth == 1.0:
        assert body.endswith(s.needle)


def test_deeper_requests_put_the_needle_later():
    got = [tasks.build("niah_single", 4000, d, words, seed=11).actual_depth for d in tasks.DEPTHS]
    assert got == sorted(got) and got[0] == 0.0 and got[-1] == 1.0


def test_haystack_is_a_contiguous_slice_of_the_text():
    for task in tasks.TASKS:
        window_start(tasks.build(task, 2500, 0.25, words, seed=2))


def test_deterministic_and_seeded():
    a = tasks.build("passkey", 1500, 0.75, words, seed=42, index=3)
    b = tasks.build("passkey", 1500, 0.75, words, seed=42, index=3)
    assert a == b
    others = [tasks.build("passkey", 1500, 0.75, words, seed=43, index=3),
              tasks.build("passkey", 1500, 0.75, words, seed=42, index=4)]
    for c in others:
        assert c.answer != a.answer and c.text != a.text


def test_suite_grid():
    samples = tasks.suite(words, lengths=(400, 800), per_cell=2, seed=1)
    assert len(samples) == len(tasks.TASKS) * 2 * len(tasks.DEPTHS) * 2
    assert len({s.answer for s in samples}) == len(samples)
    assert [s.n_tokens for s in samples[:10]] == [400] * 10


def test_multikey_needles_are_distinct():
    s = tasks.build("niah_multikey", 3000, 0.5, words, seed=9, n_keys=5)
    assert len(s.keys) == len(set(s.keys)) == 5
    values = re.findall(r"magic numbers for [\w-]+ is: (\d+)\.", s.text)
    assert len(values) == 5 and len(set(values)) == 5
    assert s.answer == values[[k for k in re.findall(r"magic numbers for ([\w-]+) is", s.text)].index(s.keys[0])]
    assert ("for %s mentioned" % s.keys[0]) in s.text


def test_checker_accepts_right_and_rejects_wrong():
    s = tasks.build("passkey", 500, 0.5, words, seed=0)
    v = s.answer
    for good in [v, " %s" % v, "%s\n" % v, "The pass key is %s." % v, "%s is the pass key" % v]:
        assert tasks.is_correct(good, s), good
    wrong_value = str(int(v) + 1)
    for bad in ["", "I do not know.", v[:-1], v + "0", wrong_value, "1 %s" % v,
                "The pass key is %s." % wrong_value]:
        assert not tasks.is_correct(bad, s), bad
    assert tasks.is_correct("1234567", "1234567") and not tasks.is_correct("123456", "1234567")


def test_bad_arguments():
    with pytest.raises(ValueError):
        tasks.build("passkey", 20, 0.5, words)  # shorter than the question
    with pytest.raises(ValueError):
        tasks.build("nope", 1000, 0.5, words)
    with pytest.raises(ValueError):
        tasks.build("passkey", 1000, 1.5, words)
    with pytest.raises(ValueError):
        tasks.build("passkey", 10 ** 7, 0.5, words)  # more than the text holds
