"""RULER-style long-context tasks on real prose, assembled from tokens.

Tasks (after RULER, Hsieh et al. 2024; its categories and answer check, our haystacks):
- passkey: "The pass key is 71432. Remember it. 71432 is the pass key." in the text.
- niah_single_number / _word / _uuid: one needle "One of the special magic {numbers|words|uuids}
  for <key> is: <value>."; the question asks for that key.
- niah_multikey: four such needles (numbers) with distinct keys; one is asked.
- niah_multivalue: four needles with the same key and different values; all four are asked.
- niah_multiquery: four needles with distinct keys; all four keys are asked.
- vt (variable tracking): a chain "VAR ABCDE = 12345.", "VAR FGHIJ = VAR ABCDE.", ... of five
  assignments spread through the text; the question asks for every variable holding the value.
- cwe (common words): a numbered list of words from the novels, ten of them repeated 30 times
  (fewer below 4,500 tokens) and the rest 3 times; the question asks for the ten most common.
- fwe (frequent words): words from the novels drawn with Zipf weights (alpha 2); the question
  asks for the three most frequent.

The haystacks are Jane Austen's six novels (eval/MODELS.md), never filler. A prompt is built at
the token level: the chat template's head and the task's introduction, a contiguous slice of a
novel's tokens that starts at a sentence, the needles' tokens inserted at the sentence boundaries
nearest to their depths, then the question, the template's tail and an answer prefix (as RULER
primes the answer). So every prompt has exactly the requested number of tokens (prompts of one
length batch without padding), and a prompt is stored as a short list of segments: literal token
ids and (novel, first, last) slices of the tokenised novels (Corpus), small enough to travel.

Every choice depends only on (seed, task, length, index): prompts are reproducible anywhere.
An answer is correct when every expected value appears in the generated text (RULER's
string_match_all), case-insensitively, numbers not inside longer numbers.
"""
import dataclasses
import glob
import os
import random
import re
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_TEXT = os.path.join(HERE, "data", "emma.txt")

TASKS = ("passkey", "niah_single_number", "niah_single_word", "niah_single_uuid", "niah_multikey",
         "niah_multivalue", "niah_multiquery", "vt", "cwe", "fwe")
# Tokens to generate per task: enough for the answer after the answer prefix (RULER's budgets,
# cut to what these answers take; generation also stops at the end-of-turn token).
MAX_NEW_TOKENS = {"passkey": 12, "niah_single_number": 16, "niah_single_word": 16, "niah_single_uuid": 40,
                  "niah_multikey": 16, "niah_multivalue": 64, "niah_multiquery": 64, "vt": 40, "cwe": 80,
                  "fwe": 32}

# Keys of the needles: adjective-noun pairs, none of them in the novels as such.
_ADJECTIVES = ("amber", "brisk", "cobalt", "dusty", "eager", "frosty", "gentle", "hollow",
               "ivory", "jolly", "keen", "lunar", "misty", "nimble", "olive", "polar", "quiet",
               "rusty", "silver", "tidal", "umber", "velvet", "windy", "young", "zesty")
_NOUNS = ("anchor", "beacon", "canyon", "dolphin", "ember", "falcon", "glacier", "harbor",
          "island", "jasmine", "kettle", "lantern", "meadow", "nebula", "orchard", "pebble",
          "quarry", "raven", "saddle", "thistle", "walrus", "yarrow", "zephyr")

NIAH_INTRO = ("Some special magic {kind} are hidden within the following text. Make sure to "
              "memorize them. I will quiz you about the {kind} afterwards.")


# ---------------------------------------------------------------------------------------------
# Text and tokens

def load_texts(paths=None):
    """{name: text} of the given files or folder of *.txt (default: eval/data/emma.txt). Headings
    (lines without a lower-case letter) and the underscores that mark italics are dropped, and
    each paragraph is joined into one line."""
    if paths is None:
        paths = [DEFAULT_TEXT]
    elif isinstance(paths, str):
        paths = sorted(glob.glob(os.path.join(paths, "*.txt"))) if os.path.isdir(paths) else [paths]
    texts = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            raw = f.read()
        paras = [" ".join(b.split()).replace("_", "") for b in re.split(r"\n\s*\n", raw)]
        texts[os.path.splitext(os.path.basename(path))[0]] = "\n\n".join(p for p in paras if re.search(r"[a-z]", p))
    return texts


class Corpus:
    """The novels as token ids, with the token positions where a sentence starts.

    tokenizer(text) -> (ids, offsets): offsets[i] is the character where token i starts."""

    def __init__(self, books, starts, vocabulary):
        self.books = books            # {name: list of token ids}
        self.starts = starts          # {name: sorted token indices that begin a sentence}
        self.vocabulary = vocabulary  # sorted lower-case words of 4 to 10 letters the novels use
        self.names = sorted(books)

    @classmethod
    def from_texts(cls, texts, tokenizer):
        books, starts, words = {}, {}, set()
        for name, text in texts.items():
            ids, offsets = tokenizer(text)
            books[name] = list(ids)
            starts[name] = [i for i, o in enumerate(offsets) if i > 0 and _sentence_starts_at(text, o)]
            words.update(re.findall(r"\b[a-z]{4,10}\b", text))
        return cls(books, starts, sorted(words))

    def to_json(self):
        return {"books": self.books, "starts": self.starts, "vocabulary": self.vocabulary}

    @classmethod
    def from_json(cls, d):
        return cls(d["books"], d["starts"], d["vocabulary"])


_ABBREVIATIONS = ("Mr", "Mrs", "Ms", "Dr", "St", "Col", "Capt", "Rev", "Esq", "Sir")


def _sentence_starts_at(text, pos):
    """True when the token starting at character pos begins a new sentence within a paragraph,
    with the space before it: what precedes ends a sentence (closing quotes allowed, not an
    abbreviation such as "Mrs."), and the sentence starts with a capital letter or a quote. A
    piece inserted there, with a space of its own in front, reads as a sentence of the text."""
    if pos <= 0 or pos >= len(text) or text[pos] != " ":
        return False
    head = text[:pos].rstrip("\"')")
    if not head.endswith((".", "!", "?")):
        return False
    word = head[:-1].rsplit(None, 1)[-1] if head[:-1].split() else ""
    if word in _ABBREVIATIONS or (len(word) == 1 and word.isupper()):
        return False
    nxt = text[pos:].lstrip()[:1]
    return nxt.isupper() or nxt in "\"'("


# ---------------------------------------------------------------------------------------------
# Prompts

@dataclasses.dataclass
class Prompt:
    task: str
    length: int
    index: int
    book: str
    depths: list          # where each inserted piece sits, as a fraction of the haystack
    answers: list         # every string the answer must contain
    segments: list        # ["ids", [...]] or ["hay", book, first, last] (a slice of the novel)
    max_new_tokens: int

    def ids(self, corpus):
        out = []
        for seg in self.segments:
            out += seg[1] if seg[0] == "ids" else corpus.books[seg[1]][seg[2]:seg[3]]
        return out

    def to_json(self):
        return dataclasses.asdict(self)


def split_template(format_prompt):
    """(before, after): the text around the user message of format_prompt (the chat template)."""
    marker = "\x00MESSAGE\x00"
    text = format_prompt(marker)
    i = text.index(marker)
    return text[:i], text[i + len(marker):]


class Builder:
    """Builds prompts of exactly `length` tokens. encode(text) -> token ids (no special tokens
    added); template = (before, after) around the user message (split_template)."""

    def __init__(self, corpus, encode, template=("", "\nAnswer:"), seed=0):
        self.corpus, self.encode, self.template, self.seed = corpus, encode, template, seed
        self._pad = encode(" ")
        if len(self._pad) != 1:
            raise ValueError("the tokenizer must encode a space as one token, got %r" % (self._pad,))

    def build(self, task, length, index):
        if task not in TASKS:
            raise ValueError("task must be one of %s, got %r" % (TASKS, task))
        rng = random.Random("%s|%s|%d|%d" % (self.seed, task, length, index))
        book = self.corpus.names[(index + TASKS.index(task)) % len(self.corpus.names)]
        if task in ("cwe", "fwe"):
            return self._build_list(task, length, index, rng, book)
        intro, pieces, question, prefix, answers = self._needle_task(task, rng)
        depths = sorted(rng.random() for _ in pieces) if task == "vt" else [rng.random() for _ in pieces]
        head = self._head(intro)
        tail = self._tail(question, prefix)
        piece_ids = [self.encode(" " + p) for p in pieces]
        hay_len = length - len(head) - len(tail) - sum(len(p) for p in piece_ids)
        book = self._book_that_fits(book, hay_len + 1)
        ids = self.corpus.books[book]
        starts = self.corpus.starts[book]
        if hay_len < 16 or len(ids) < hay_len + 1:
            raise ValueError("%s: %d tokens do not fit the prompt's %d fixed tokens in %s" %
                             (task, length, length - hay_len, book))
        first = rng.choice([s for s in starts if s + hay_len <= len(ids)] or [0])
        last = first + hay_len
        inner = [s for s in starts if first < s < last]  # sentence starts inside the slice
        cuts = []
        for d in depths:
            goal = first + d * hay_len
            cuts.append(min(inner + [first, last], key=lambda s: (abs(s - goal), s)))
        segments, prev = [["ids", head]], first
        order = sorted(range(len(pieces)), key=lambda i: (cuts[i], i))
        for i in order:
            if cuts[i] > prev:
                segments.append(["hay", book, prev, cuts[i]])
            segments.append(["ids", piece_ids[i]])
            prev = cuts[i]
        if last > prev:
            segments.append(["hay", book, prev, last])
        segments.append(["ids", tail])
        actual = [(c - first) / hay_len for c in cuts]
        return Prompt(task, length, index, book, actual, answers, segments, MAX_NEW_TOKENS[task])

    def _book_that_fits(self, book, tokens):
        """book, or where it is shorter than `tokens` (the shorter novels at 128K), the next one in
        the corpus's order that is long enough."""
        names = self.corpus.names
        start = names.index(book)
        for name in names[start:] + names[:start]:
            if len(self.corpus.books[name]) >= tokens:
                return name
        return book  # none is: build() says so

    # -- pieces --------------------------------------------------------------------------------

    def _head(self, intro):
        return self.encode(self.template[0] + intro + "\n\n")

    def _tail(self, question, prefix):
        return self.encode("\n\n" + question + self.template[1] + prefix)

    def _needle_task(self, task, rng):
        """(intro, inserted sentences, question, answer prefix, answers)."""
        if task == "passkey":
            value = str(rng.randint(10 ** 4, 10 ** 7 - 1))  # 5 to 7 digits
            intro = ("There is an important piece of information hidden inside a lot of irrelevant text. "
                     "Find it and memorize it. I will quiz you about it.")
            piece = "The pass key is %s. Remember it. %s is the pass key." % (value, value)
            return intro, [piece], "What is the pass key?", "The pass key is", [value]
        if task == "vt":
            value = str(rng.randint(10 ** 4, 10 ** 5 - 1))
            names = []
            while len(names) < 5:
                v = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(5))
                if v not in names:
                    names.append(v)
            pieces = ["VAR %s = %s." % (names[0], value)]
            pieces += ["VAR %s = VAR %s." % (names[i], names[i - 1]) for i in range(1, 5)]
            intro = "Memorize and track the chain of variable assignments hidden in the following text."
            question = "Find all variables that are assigned the value %s in the text above." % value
            prefix = ("According to the chain of variable assignments in the text above, 5 variables are "
                      "assigned the value %s, they are:" % value)
            return intro, pieces, question, prefix, names
        kind = {"niah_single_word": "words", "niah_single_uuid": "uuids"}.get(task, "numbers")
        n_needles = 1 if task.startswith("niah_single") else 4
        n_keys = 1 if task in ("niah_multivalue",) or task.startswith("niah_single") else 4
        keys = ["%s-%s" % p for p in rng.sample([(a, b) for a in _ADJECTIVES for b in _NOUNS], n_keys)]
        values = []
        while len(values) < n_needles:
            v = self._value(kind, rng)
            if v not in values:
                values.append(v)
        needle_keys = keys if n_keys == n_needles else keys * n_needles
        pieces = ["One of the special magic %s for %s is: %s." % (kind, k, v) for k, v in zip(needle_keys, values)]
        intro = NIAH_INTRO.format(kind=kind)
        if task == "niah_multiquery":
            asked = ", ".join(keys[:-1]) + " and " + keys[-1]
            question = "What are all the special magic %s for %s mentioned in the provided text?" % (kind, asked)
            prefix = "The special magic %s for %s mentioned in the provided text are" % (kind, asked)
            return intro, pieces, question, prefix, values
        if task == "niah_multivalue":
            question = "What are all the special magic %s for %s mentioned in the provided text?" % (kind, keys[0])
            prefix = "The special magic %s for %s mentioned in the provided text are" % (kind, keys[0])
            return intro, pieces, question, prefix, values
        singular = kind[:-1]
        question = "What is the special magic %s for %s mentioned in the provided text?" % (singular, keys[0])
        prefix = "The special magic %s for %s mentioned in the provided text is" % (singular, keys[0])
        return intro, pieces, question, prefix, values[:1]

    def _value(self, kind, rng):
        if kind == "numbers":
            return str(rng.randint(10 ** 6, 10 ** 7 - 1))
        if kind == "uuids":
            return str(uuid.UUID(int=rng.getrandbits(128), version=4))
        return rng.choice(self.corpus.vocabulary)

    def _build_list(self, task, length, index, rng, book):
        vocab = self.corpus.vocabulary
        if task == "cwe":
            intro = ("Below is a numbered list of words. In these words, some appear more often than others. "
                     "Memorize the ones that appear most often.")
            question = "What are the 10 most common words in the above list?"
            prefix = "The top 10 words that appear most often in the list are:"
        else:
            intro = ("Read the following coded text and track the frequency of each coded word. Find the three "
                     "most frequently appeared coded words.")
            question = "What are the three most frequently appeared words in the above coded text?"
            prefix = "According to the coded text above, the three most frequently appeared words are:"
        head, tail = self._head(intro), self._tail(question, prefix)
        budget = length - len(head) - len(tail)
        words = rng.sample(vocab, min(len(vocab), 4000))
        if task == "cwe":
            common, rare = words[:10], words[10:]
            often = max(4, min(30, budget // 150))  # RULER's 30 times, fewer in short prompts

            def items(k):  # ten common words `often` times, k rare ones 3 times, shuffled
                seq = common * often + rare[:k] * 3
                random.Random("%d|%d" % (index, k)).shuffle(seq)
                return seq
            lo, hi = 0, len(rare)  # most rare words that fit
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if len(self._numbered(items(mid))) <= budget:
                    lo = mid
                else:
                    hi = mid - 1
            body = self._numbered(items(lo))
            answers = common
        else:
            coded = words[:200]
            weights = [1.0 / (r + 1) ** 2 for r in range(len(coded))]
            body = []
            while True:
                w = self.encode(" " + rng.choices(coded, weights)[0])
                if len(body) + len(w) > budget:
                    break
                body += w
            answers = coded[:3]
        if len(body) > budget or budget < 16:
            raise ValueError("%s: %d tokens do not fit the prompt's fixed tokens" % (task, length))
        body += self._pad * (budget - len(body))  # exact length: spaces after the list
        return Prompt(task, length, index, book, [], answers, [["ids", head], ["ids", body], ["ids", tail]],
                      MAX_NEW_TOKENS[task])

    def _numbered(self, words):
        return self.encode("".join("\n%d. %s" % (i + 1, w) for i, w in enumerate(words)))


# ---------------------------------------------------------------------------------------------
# Checking

def is_correct(generated, answers):
    """Every expected value appears in the generated text (case-insensitive; a number must not be
    part of a longer number, a word not part of a longer word)."""
    return all(_found(generated, a) for a in answers)


def score(generated, answers):
    """The share of expected values that appear (RULER's string_match_all score)."""
    return sum(_found(generated, a) for a in answers) / len(answers)


def _found(text, answer):
    pattern = r"(?<![0-9A-Za-z])" + re.escape(answer) + r"(?![0-9A-Za-z])"
    return re.search(pattern, text, flags=re.IGNORECASE) is not None


# ---------------------------------------------------------------------------------------------
# Adapters for a Hugging Face tokenizer

def hf_adapters(tokenizer, use_chat_template=None):
    """(tokenize_with_offsets, encode, template) for a transformers tokenizer: the chat template
    when it has one (an instruct model), else a plain "Answer:" cue."""
    if use_chat_template is None:
        use_chat_template = bool(getattr(tokenizer, "chat_template", None))
    if use_chat_template:
        template = split_template(lambda m: tokenizer.apply_chat_template(
            [{"role": "user", "content": m}], tokenize=False, add_generation_prompt=True))
    else:
        template = ("", "\nAnswer:")

    def with_offsets(text):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return enc["input_ids"], [o[0] for o in enc["offset_mapping"]]

    def encode(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return with_offsets, encode, template
