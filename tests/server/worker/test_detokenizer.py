"""Incremental detokenization: equals a full decode, never splits a character, holds back stop prefixes."""

from counterpoint.server.worker.detokenizer import Detokenizer


def stream(tokenizer, text: str, stop=(), prompt="Say:") -> tuple[list[str], bool]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    detok = Detokenizer(tokenizer, tokenizer(prompt)["input_ids"], list(stop))
    pieces, stopped = [], False
    for i, t in enumerate(ids):
        stopped = detok.add(t)
        pieces.append(detok.take(finished=stopped or i == len(ids) - 1))
        if stopped:
            break
    return pieces, stopped


def test_concatenated_deltas_equal_the_full_decode(tokenizer):
    text = " Hello world, this is a test of naïve café 東京 emoji 🙂 done."
    pieces, _ = stream(tokenizer, text)
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)  # multi-byte characters arrive whole


def test_stop_string_cuts_and_is_never_sent(tokenizer):
    pieces, stopped = stream(tokenizer, " one two three four five", stop=["three"])
    assert stopped and "".join(pieces) == " one two "
    pieces, stopped = stream(tokenizer, " one two three", stop=["thr", "two"])
    assert stopped and "".join(pieces) == " one "


def test_partial_stop_prefix_is_held_back_then_released(tokenizer):
    ids = tokenizer(" abc xyz", add_special_tokens=False)["input_ids"]
    detok = Detokenizer(tokenizer, [], ["xyzzy"])
    sent = ""
    for t in ids:
        assert not detok.add(t)
        sent += detok.take(finished=False)
    assert len(sent) <= len(" abc xyz") - 4  # the tail could still begin "xyzzy"
    sent += detok.take(finished=True)
    assert sent == " abc xyz"
