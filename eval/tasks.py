"""Retrieval tasks for the accuracy evaluation: passkey and needle-in-a-haystack.

The haystack is real prose (Jane Austen's novels, see MODELS.md), never filler or repeated
sentences. Every builder is deterministic: a sample depends only on (seed, task, length, depth,
index). The builders are tokenizer-agnostic: they take `count_tokens(text) -> int`, which counts
the tokens of the *whole* model input, and `format_prompt(user_message) -> text`, which wraps the
user message into that input (the chat template for an instruct model, identity otherwise), and
they fit the haystack word by word so that the input has at most `target_tokens` tokens and at
least `target_tokens - margin`.

Tasks:
- passkey: "The pass key is 71432. Remember it. 71432 is the pass key." (5 to 7 digits).
- niah_single: one needle "One of the special magic numbers for <key> is: <7 digits>."
- niah_multikey: several such needles with distinct keys; the question asks for one of them,
  which sits at the requested depth, the others at other depths.

Depth d in [0, 1] places the asked needle at the sentence boundary of the haystack nearest to
fraction d of its words: 0 is the very start, 1 the very end (just before the question).
"""
import dataclasses
import glob
import os
import random
import re

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_TEXT = os.path.join(HERE, "data", "emma.txt")

TASKS = ("passkey", "niah_single", "niah_multikey")
DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)

PASSKEY_INTRO = ("There is an important piece of information hidden inside a lot of irrelevant "
                 "text. Find it and memorize it. I will quiz you about it.")
PASSKEY_QUESTION = "What is the pass key? Answer with the number only."
NIAH_INTRO = ("Some special magic numbers are hidden within the following text. Make sure to "
              "memorize them. I will quiz you about the numbers afterwards.")
NIAH_QUESTION = ("What is the special magic number for {key} mentioned in the provided text? "
                 "Answer with the number only.")

# Keys of the needles: adjective-noun pairs, none of them in the novels as such.
_ADJECTIVES = ("amber", "brisk", "cobalt", "dusty", "eager", "frosty", "gentle", "hollow",
               "ivory", "jolly", "keen", "lunar", "misty", "nimble", "olive", "polar", "quiet",
               "rusty", "silver", "tidal", "umber", "velvet", "windy", "young", "zesty")
_NOUNS = ("anchor", "beacon", "canyon", "dolphin", "ember", "falcon", "glacier", "harbor",
          "island", "jasmine", "kettle", "lantern", "meadow", "nebula", "orchard", "pebble",
          "quarry", "raven", "saddle", "thistle", "walrus", "yarrow", "zephyr")


@dataclasses.dataclass
class Sample:
    task: str
    target_tokens: int
    depth: float            # requested depth of the asked needle
    index: int              # sample number within (task, length, depth)
    text: str               # the whole model input (format_prompt applied)
    user_message: str       # the message before format_prompt
    answer: str             # the expected value (digits)
    needle: str             # the asked needle sentence
    n_tokens: int           # count_tokens(text)
    needle_word: int        # where the asked needle starts, in haystack words
    haystack_words: int     # haystack length in words, needles excluded
    keys: tuple = ()        # the keys of all needles (niah tasks)

    @property
    def actual_depth(self):
        return self.needle_word / max(1, self.haystack_words)


# ---------------------------------------------------------------------------------------------
# Text

def load_paragraphs(paths=None):
    """Paragraphs of prose from the given text files (default: eval/data/emma.txt).

    A paragraph is a block of lines separated by blank lines, joined into one line. Headings
    (lines without a lower-case letter, like "CHAPTER IV") are dropped, and the underscores
    that mark italics are removed.
    """
    if paths is None:
        paths = [DEFAULT_TEXT]
    elif isinstance(paths, str):
        paths = sorted(glob.glob(os.path.join(paths, "*.txt"))) if os.path.isdir(paths) else [paths]
    paragraphs = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            raw = f.read()
        for block in re.split(r"\n\s*\n", raw):
            line = " ".join(block.split()).replace("_", "")
            if re.search(r"[a-z]", line):
                paragraphs.append(line)
    return paragraphs


class Haystack:
    """The text as a sequence of words, each with the separator that follows it."""

    def __init__(self, paragraphs):
        self.words, self.seps, self.para_starts = [], [], []
        for p in paragraphs:
            self.para_starts.append(len(self.words))
            ws = p.split(" ")
            self.words.extend(ws)
            self.seps.extend([" "] * (len(ws) - 1) + ["\n\n"])

    def join(self, start, stop):
        return "".join(w + s for w, s in zip(self.words[start:stop], self.seps[start:stop]))

    def is_boundary(self, i):
        """True when a sentence starts at word i (the previous word ends a sentence)."""
        if i <= 0:
            return True
        w = self.words[i - 1].rstrip("\"')")
        return self.seps[i - 1] == "\n\n" or w.endswith((".", "!", "?"))


def _nearest_boundary(hay, start, n, frac):
    """The sentence boundary (a word offset in [0, n]) nearest to fraction frac of n words."""
    goal = round(frac * n)
    for step in range(n + 1):
        for j in (goal - step, goal + step):
            if 0 <= j <= n and (j == n or hay.is_boundary(start + j)):
                return j
    return goal


# ---------------------------------------------------------------------------------------------
# Needles

def _passkey(rng):
    digits = rng.randint(5, 7)
    value = str(rng.randint(10 ** (digits - 1), 10 ** digits - 1))
    return value, "The pass key is %s. Remember it. %s is the pass key." % (value, value)


def _niah_needle(key, value):
    return "One of the special magic numbers for %s is: %s." % (key, value)


def _keys(rng, n):
    pairs = rng.sample([(a, b) for a in _ADJECTIVES for b in _NOUNS], n)
    return ["%s-%s" % p for p in pairs]


# ---------------------------------------------------------------------------------------------
# Builders

def build(task, target_tokens, depth, count_tokens, format_prompt=lambda s: s, index=0,
          seed=0, haystack=None, n_keys=4, margin=None):
    """Builds one sample whose input has between target_tokens - margin and target_tokens tokens.

    margin defaults to 8 tokens plus 0.1% of the target: one more word would overshoot.
    """
    if task not in TASKS:
        raise ValueError("task must be one of %s, got %r" % (TASKS, task))
    if not 0.0 <= depth <= 1.0:
        raise ValueError("depth must be in [0, 1], got %r" % depth)
    if haystack is None:
        haystack = default_haystack()
    if margin is None:
        margin = 8 + target_tokens // 1000
    rng = random.Random("%s|%s|%d|%.4f|%d" % (seed, task, target_tokens, depth, index))

    # The needles: (relative depth, sentence); the asked one first.
    if task == "passkey":
        answer, needle = _passkey(rng)
        needles, keys = [(depth, needle)], ()
        intro, question = PASSKEY_INTRO, PASSKEY_QUESTION
    else:
        keys = tuple(_keys(rng, 1 if task == "niah_single" else n_keys))
        values = [str(v) for v in rng.sample(range(10 ** 6, 10 ** 7), len(keys))]  # distinct
        answer, needle = values[0], _niah_needle(keys[0], values[0])
        needles = [(depth, needle)]
        # Distractors go to random depths at least 0.1 away from the asked needle.
        others = []
        while len(others) < len(keys) - 1:
            d = rng.random()
            if abs(d - depth) >= 0.1:
                others.append(d)
        needles += [(d, _niah_needle(k, v)) for d, k, v in zip(others, keys[1:], values[1:])]
        intro, question = NIAH_INTRO, NIAH_QUESTION.format(key=keys[0])

    # The haystack window starts at a random paragraph with enough words after it: no input
    # needs more words than tokens (every word is at least one token).
    words_total = len(haystack.words)
    starts = [p for p in haystack.para_starts if p + target_tokens <= words_total]
    if not starts:
        raise ValueError("the text has %d words, too few for %d tokens" % (words_total, target_tokens))
    start = rng.choice(starts)

    def compose(n):
        """The input with n haystack words; returns (text, message, needle word offset)."""
        cuts = sorted((_nearest_boundary(haystack, start, n, d), i) for i, (d, _) in enumerate(needles))
        parts, prev, asked_at = [], 0, 0
        for cut, i in cuts:
            parts.append(haystack.join(start + prev, start + cut))
            if parts[-1] and not parts[-1].endswith((" ", "\n")):
                parts.append(" ")
            parts.append(needles[i][1] + " ")
            if i == 0:
                asked_at = cut
            prev = cut
        parts.append(haystack.join(start + prev, start + n))
        body = "".join(parts).strip()
        message = "%s\n\n%s\n\n%s" % (intro, body, question)
        return format_prompt(message), message, asked_at

    # Largest n whose input fits (token counts grow with n).
    if count_tokens(compose(0)[0]) > target_tokens:
        raise ValueError("target_tokens %d is shorter than the prompt without haystack" % target_tokens)
    lo, hi = 0, target_tokens  # compose(lo) fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count_tokens(compose(mid)[0]) <= target_tokens:
            lo = mid
        else:
            hi = mid - 1
    text, message, asked_at = compose(lo)
    n_tokens = count_tokens(text)
    if n_tokens < target_tokens - margin:
        raise ValueError("could fit only %d of %d tokens (margin %d)" % (n_tokens, target_tokens, margin))
    return Sample(task=task, target_tokens=target_tokens, depth=depth, index=index, text=text,
                  user_message=message, answer=answer, needle=needle, n_tokens=n_tokens,
                  needle_word=asked_at, haystack_words=lo, keys=keys)


def suite(count_tokens, format_prompt=lambda s: s, tasks=TASKS, lengths=(2048,), depths=DEPTHS,
          per_cell=1, seed=0, haystack=None, n_keys=4):
    """All samples of a grid: tasks x lengths x depths x per_cell, in a fixed order."""
    if haystack is None:
        haystack = default_haystack()
    return [build(t, n, d, count_tokens, format_prompt, index=i, seed=seed, haystack=haystack,
                  n_keys=n_keys)
            for t in tasks for n in lengths for d in depths for i in range(per_cell)]


_DEFAULT = {}


def default_haystack(paths=None):
    key = repr(paths)
    if key not in _DEFAULT:
        _DEFAULT[key] = Haystack(load_paragraphs(paths))
    return _DEFAULT[key]


# ---------------------------------------------------------------------------------------------
# Checking

def extract_number(generated):
    """The first run of digits in the generated text, or None."""
    m = re.search(r"\d+", generated)
    return m.group(0) if m else None


def is_correct(generated, sample_or_answer):
    """Exact match: the first number in the generated text equals the answer."""
    answer = getattr(sample_or_answer, "answer", sample_or_answer)
    return extract_number(generated) == answer


# ---------------------------------------------------------------------------------------------
# Adapters for a Hugging Face tokenizer

def hf_adapters(tokenizer, use_chat_template=None):
    """(count_tokens, format_prompt) for a transformers tokenizer.

    The chat template is used when the tokenizer has one (an instruct model) unless told
    otherwise; format_prompt then returns the templated text, special tokens included, and
    count_tokens counts it without adding any more.
    """
    if use_chat_template is None:
        use_chat_template = bool(getattr(tokenizer, "chat_template", None))
    if use_chat_template:
        def format_prompt(message):
            return tokenizer.apply_chat_template([{"role": "user", "content": message}],
                                                 tokenize=False, add_generation_prompt=True)
        add_special = False
    else:
        def format_prompt(message):
            return message + "\nAnswer:"
        add_special = True

    def count_tokens(text):
        return len(tokenizer(text, add_special_tokens=add_special)["input_ids"])
    count_tokens.add_special_tokens = add_special
    return count_tokens, format_prompt
