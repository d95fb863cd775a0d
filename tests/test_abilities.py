"""Questions about the model itself (nextgpt/abilities.py): which messages count, the answer built from the
checkpoint's parts and world, and the engine answering them itself only where the checkpoint has a world.

    .venv/bin/python -m pytest tests/test_abilities.py -q

The phrasings below are none of the detector's anchors: they measure it. ASKS are questions about the model;
every user phrasing of the world's test split, its general questions and the general-chat questions must not
be caught (they are what the model is for).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from nextgpt.abilities import ABILITY_ANCHORS, AbilityQuestions, describe_abilities, other_anchors, sentences
from nextgpt.config import GenerationSettings, Modality
from nextgpt.world_profile import WorldModality, WorldProfile

ROOT = Path(__file__).resolve().parent.parent

BRIEF = ("What can you do?", "what are you able to do", "help", "what do you know about",
         "Is this a real photograph? What do you actually know about?")  # what users typed
ASKS = BRIEF + (
    "What can u do?", "What are you able to do?", "Help me!", "What abilities do you have?",
    "What kinds of things can you make?", "Who are you and what can you do?", "What else can you do?",
    "What are you capable of doing?", "Tell me what you can do.", "What do you know about images?",
    "Which sounds do you know?", "What can you generate?", "How can you help?", "What can this model do?",
    "What are your capabilities?", "Can you tell me what you are able to do?", "What types of media can you handle?",
    "What things do you recognise?", "What colours do you know?", "What colours and shapes do you know?",
    "What can I do with you?", "What are your limitations?", "List your abilities.", "Explain what you can do.",
    "what do you do", "What are you for?", "I need help, what can I do here?", "What do you know how to draw?",
    "What kind of things do you understand?", "what can i ask u", "What do you understand about pictures?",
    "What sort of things can you do?", "what are u capable of", "Can you explain your features?",
    "What are you trained to do?", "What should I ask you?", "which things can you create",
    "What do you know how to do?", "Tell me your skills.", "Any idea what you can help with?", "What is it that you do?",
)
NOT_ASKS_EXTRA = ("draw a red circle", "Draw a red circle.", "what colour is it?", "What colour is it?",
                  "Can you make a sound?", "Make it bigger.", "What do you know about France?",
                  "Help me write a birthday card.", "Who are you?", "What is this picture?", "Can you draw something?",
                  "Make some noise.", "How do you bake bread?", "Tell me about the moon.", "Draw me anything you like.",
                  "What do you think about cats?", "Can you play a song?", "What is in the video?",
                  "Could you help me fix my bike?", "Name a colour.")


def not_asks() -> list[str]:
    """Every user phrasing of the world's test split (requests filled with a caption), its general questions and
    the general-chat questions, less the few that do ask about the model."""
    from nextgpt.eval.questions import GENERAL_QUESTIONS
    from nextgpt.world.prompts import TEST_BOOK
    from nextgpt.world.vocab import sample_spec

    spec = importlib.util.spec_from_file_location("make_general_chat", ROOT / "scripts" / "make_general_chat.py")
    general_chat = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(general_chat)
    rng = np.random.default_rng(0)
    book = TEST_BOOK
    out = [p for prompts in book.comprehension.values() for p in prompts]
    out += [t.format(caption=sample_spec(m, rng).caption) for m, templates in book.t2m.items() for t in templates]
    out += [p for values in book.edits.values() for prompts in values.values() for p in prompts]
    out += [q for questions in book.questions.values() for q in questions]
    out += [t.format(value="down") for t in book.animate + book.upload_edits] + list(book.still)
    u = book.uploads  # requests about uploaded media
    out += [p for table in (u.edits, u.checks) for values in table.values() for prompts in values.values() for p in prompts]
    out += [p.format(one="sound", noun="sounds") for values in u.which.values() for prompts in values.values()
            for p in prompts]
    out += [p.format(one="clip", noun="clips") for prompts in u.same.values() for p in prompts]
    out += [t.format(value="down") for t in u.animate] + list(u.still + u.reverse)
    out += [human for human, _ in book.chat] + [q for q, _ in GENERAL_QUESTIONS] + general_chat.questions()
    out += list(NOT_ASKS_EXTRA)
    about_the_model = {"What are you able to do?", "What can you do?", "What colours do you know?"}
    return sorted(set(out) - about_the_model)


@pytest.fixture(scope="module")
def asks() -> AbilityQuestions:
    return AbilityQuestions()


# ---- which messages count ----------------------------------------------------------------------------------
def test_the_measured_phrasings_are_not_anchors():
    anchors = {a.lower().strip(" ?.!") for a in ABILITY_ANCHORS + tuple(other_anchors())}
    assert not anchors & {a.lower().strip(" ?.!") for a in ASKS if a not in BRIEF}


def test_questions_about_the_model_are_caught(asks):
    caught = [a for a in ASKS if asks(a)]
    assert all(asks(a) for a in BRIEF), [a for a in BRIEF if not asks(a)]
    assert len(caught) >= 0.9 * len(ASKS), sorted(set(ASKS) - set(caught))


def test_what_the_model_is_for_is_never_caught(asks):
    phrasings = not_asks()
    assert len(phrasings) >= 300
    caught = [p for p in phrasings if asks(p)]
    assert caught == []


def test_sentences_count_one_by_one():
    assert sentences("Is this real?  What do you know?") == ["Is this real? What do you know?", "Is this real?",
                                                            "What do you know?"]
    assert sentences("help") == ["help"]


def test_without_a_sentence_encoder_nothing_is_caught(caplog):
    def broken(texts):
        raise OSError("no such model")

    asks = AbilityQuestions(broken)
    assert asks("What can you do?") is False and asks("What can you do?") is False
    assert "left to the LLM" in caplog.text
    assert AbilityQuestions(lambda texts: np.ones((len(texts), 4)))("") is False


# ---- the answer ------------------------------------------------------------------------------------------
def nano_world() -> WorldProfile:
    from nextgpt.world.vocab import ATTRIBUTES, CAPTION_TEMPLATES, WORLD_GISTS, WORLD_PHRASES

    return WorldProfile("the nano world", {Modality(m): WorldModality(dict(ATTRIBUTES[m]), CAPTION_TEMPLATES[m],
                                                                      WORLD_GISTS[m], WORLD_PHRASES[m]) for m in ATTRIBUTES})


def test_the_answer_names_the_checkpoints_parts_and_every_world_word():
    world = nano_world()
    text = describe_abilities("nano", reads_media=True, writes=set(Modality), world=world)
    assert text.startswith("I am nano. I read text, pictures, sounds and videos and answer with text, pictures, "
                           "sounds and videos.")
    for word in world.words():
        assert word in text, word
    assert '"Draw a red circle."' in text and '"Play a low steady tone."' in text
    assert '"Make a video of a red circle moving left."' in text


def test_the_answer_leaves_out_what_the_checkpoint_lacks():
    text = describe_abilities("nano", reads_media=False, writes={Modality.IMAGE}, world=nano_world())
    assert "I read text only and answer with text and pictures." in text and "cannot look at uploads" in text
    assert "Play" not in text and "Make a video" not in text and '"Draw a red circle."' in text
    assert "ask what it is" not in text
    assert describe_abilities("big", reads_media=True, writes=(), world=None) == (
        "I am big. I read text, pictures, sounds and videos and answer with text.")


# ---- the engine answers them itself only with a world -------------------------------------------------------
def test_a_world_checkpoint_answers_from_its_parts(tiny_model):
    tiny_model.world = nano_world()
    tiny_model.ability_questions = lambda text: "what can you do" in text.lower()
    events = list(tiny_model.stream([{"role": "user", "content": "What can you do?"}], GenerationSettings()))
    reply = events[-1].reply
    assert reply.text == tiny_model.abilities() and "".join(e.delta for e in events) == reply.text
    assert not reply.images and not reply.audios and not reply.videos
    assert reply.text.startswith(f"I am {tiny_model.cfg.name}.")


def test_without_a_world_the_llm_answers(tiny_model):
    tiny_model.world = None
    tiny_model.ability_questions = lambda text: True
    reply = tiny_model.chat([{"role": "user", "content": "What can you do?"}], GenerationSettings(max_new_tokens=3))
    assert not reply.text.startswith(f"I am {tiny_model.cfg.name}.")


def test_shipped_nano_answers_with_its_abilities():
    """The trained nano, asked in a fresh chat: the brief's phrasings get the real abilities."""
    import torch

    from nextgpt.model import NextGPT

    torch.set_num_threads(1)
    nano = NextGPT.from_preset("nano", load_decoders=False)
    for question in BRIEF:
        reply = nano.chat([{"role": "user", "content": question}], GenerationSettings(max_new_tokens=16))
        assert reply.text == nano.abilities(), question
    assert "circle, square or triangle" in nano.abilities()
    other = nano.chat([{"role": "user", "content": "What is the capital of France?"}], GenerationSettings(max_new_tokens=8))
    assert other.text != nano.abilities()
