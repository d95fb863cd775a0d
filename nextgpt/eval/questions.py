"""The general questions of the text-only row: the right reply produces no media, and, where the question
has one short right answer, names it (any of its keywords as a whole word, or as a word start where it ends
in "*", case-insensitively).

None of these questions is a training question, and no keyword is in a training answer (the general-chat
mix or any world answer): tests/test_eval.py checks both. The last ones name world words on purpose (colours,
shapes, "high") as hard negatives for modality switching.
"""

from __future__ import annotations

import re

GENERAL_QUESTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("What is the capital of Australia?", ("canberra",)),
    ("What is the largest planet in our solar system?", ("jupiter",)),
    ("What is the chemical symbol for gold?", ("au",)),
    ("Who wrote Romeo and Juliet?", ("shakespeare",)),
    ("At what temperature in Celsius does water boil at sea level?", ("100",)),
    ("Which planet is known as the Red Planet?", ("mars",)),
    ("What is the tallest mountain on Earth?", ("everest",)),
    ("What is the largest ocean on Earth?", ("pacific",)),
    ("How many hours are in a day?", ("24", "twenty-four", "twenty four")),
    ("What language do people speak in Brazil?", ("portuguese",)),
    ("What do bees make from nectar?", ("honey",)),
    ("What is the hardest natural material?", ("diamond",)),
    ("Who painted the Mona Lisa?", ("leonardo", "da vinci")),
    ("What is the longest river in Africa?", ("nile",)),
    ("How many minutes are in an hour?", ("60", "sixty")),
    ("What fruit is the main ingredient of guacamole?", ("avocado",)),
    ("What is the capital of Russia?", ("moscow",)),
    ("What is the currency of the United Kingdom?", ("pound",)),
    ("Which organ do we breathe with?", ("lung",)),
    ("What is 9 times 6?", ("54", "fifty-four", "fifty four")),
    ("How many players does a football (soccer) team have on the field?", ("11", "eleven")),
    ("Which animal is called the king of the jungle?", ("lion",)),
    ("What is the largest mammal on Earth?", ("whale",)),
    ("What is the capital of China?", ("beijing",)),
    ("Which metal is liquid at room temperature?", ("mercury",)),
    ("How many days are in a leap year?", ("366",)),
    ("Which instrument has 88 keys?", ("piano",)),
    ("Who was the first person to walk on the Moon?", ("armstrong",)),
    ("How many strings does a standard guitar have?", ("six", "6")),
    ("What do caterpillars turn into?", ("butterfl*", "moth")),
    ("What is the fastest land animal?", ("cheetah",)),
    ("How many bones are in the adult human body?", ("206",)),
    ("What is the capital of Argentina?", ("buenos aires",)),
    ("What is the largest hot desert in the world?", ("sahara",)),
    ("Which gas do humans breathe out?", ("carbon dioxide", "co2")),
    ("Which bird is a symbol of peace?", ("dove",)),
    ("Which planet has the most famous rings?", ("saturn",)),
    ("What is the capital of Greece?", ("athens",)),
    ("Who discovered penicillin?", ("fleming",)),
    ("What is the largest country by area?", ("russia",)),
    ("How do you say thank you in Spanish?", ("gracias",)),
    ("What is two plus three?", ("five", "5")),
    ("Name a fruit that is yellow.", ()),
    ("What is the opposite of high?", ()),
    ("How do you say hello in Spanish?", ("hola",)),
    ("Is a triangle a shape with three sides?", ("yes",)),
    ("What colours do you know?", ()),
    ("Who are you?", ()),
    ("Tell me a fun fact about the ocean.", ()),
    ("Why is the sky blue?", ()),
    ("Write a sentence about a red bicycle.", ()),
    ("Which is heavier, a kilogram of feathers or a kilogram of iron?", ()),
)


def keyword_right(reply: str, keywords: tuple[str, ...]) -> bool | None:
    """Whether the reply names one of the keywords; None when the question has none."""
    if not keywords:
        return None
    text = reply.lower()
    return any(re.search(rf"\b{re.escape(k.rstrip('*'))}" + ("" if k.endswith("*") else r"\b"), text)
               for k in keywords)
