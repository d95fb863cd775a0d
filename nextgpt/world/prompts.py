"""Every phrasing used in the world's records, in one place (templates, keyed by modality or attribute).

Placeholders: {caption} = an exact world caption ("a red circle"), {token} = the modality's media token
("<image>", "<audio>", "<video>"), {value} = one vocabulary word. In gpt turns the token marks where the
model must emit that modality's signal tokens; in human turns it marks an uploaded item.

The train and val splits phrase user turns with the first tables; the test split with the TEST_ tables only
(`BOOKS`: split -> `Phrasebook`), so the test measures phrasings the model never saw. Requests about uploaded
media (edits of an upload, image <-> video conversions, questions about one or two uploads) have their own tables,
`UploadBook`; `question_senses` reads back what such a question asks.
"""

from __future__ import annotations

from dataclasses import dataclass

from nextgpt.world.vocab import COLOURS, DIRECTIONS, SHAPES

# stage 1: X -> caption (human: "<token>\n" + prompt)
COMPREHENSION_PROMPTS: dict[str, tuple[str, ...]] = {
    "image": ("Describe this image.", "What is in this image?", "What do you see?", "What is shown in the picture?",
              "Can you describe the picture?", "What does this image show?", "Tell me what is in this picture.",
              "Give a short caption for this image.", "What shape and colour is this?", "Caption this image.",
              "What can you see here?", "Briefly describe the image."),
    "audio": ("Describe the sound.", "What do you hear?", "What is this sound?", "Describe this audio clip.",
              "What does this audio sound like?", "Can you describe what you hear?",
              "Give a short caption for this sound.", "Caption this audio.", "What kind of sound is this?",
              "Tell me about this sound.", "Listen and describe it.", "How does this clip sound?"),
    "video": ("What happens in this video?", "Describe this video.", "What do you see in this clip?",
              "What is moving in this video?", "Describe the motion in this clip.",
              "Give a short caption for this video.", "Caption this video.", "What does this video show?",
              "Tell me what happens in the clip.", "Which way is the object moving?", "Briefly describe the video.",
              "What is going on in this video?"),
}
CAPTION_ANSWERS: dict[str, tuple[str, ...]] = {
    "image": ("{caption}", "It is {caption}.", "This is {caption}.", "I see {caption}.", "The image shows {caption}."),
    "audio": ("{caption}", "It is {caption}.", "This is {caption}.", "I hear {caption}.", "The clip is {caption}."),
    "video": ("{caption}", "It is {caption}.", "This is {caption}.", "I see {caption}.", "The video shows {caption}."),
}

# stage 2 (caption-only generation) and T2M: text -> text + X
T2M_REQUESTS: dict[str, tuple[str, ...]] = {
    "image": ("show me {caption}", "draw {caption}", "Can you make a picture of {caption}?",
              "Please generate an image of {caption}.", "I want to see {caption}.", "Create an image of {caption}.",
              "Paint {caption} for me.", "Could you draw {caption}?", "Make a picture showing {caption}.",
              "Generate {caption}.", "I'd like a picture of {caption}.", "Can you show me {caption}?",
              "Render {caption}, please.", "Give me an image of {caption}.", "Sketch {caption}.",
              "Produce a picture of {caption}."),
    "audio": ("I'd like to hear {caption}.", "play {caption}", "Can you make {caption}?",
              "Generate a sound: {caption}.", "Let me hear {caption}.", "Please play {caption}.",
              "Create an audio clip of {caption}.", "Could you produce {caption}?", "Synthesize {caption}.",
              "I want to hear {caption}.", "Give me {caption}.", "Make me an audio clip of {caption}.",
              "Can you play {caption} for me?", "Generate audio of {caption}.", "Record {caption} for me.",
              "make the sound of {caption}"),
    "video": ("make a video of {caption}", "generate a clip of {caption}", "Show me a video of {caption}.",
              "Can you animate {caption}?", "Create a short clip of {caption}.", "I want to watch {caption}.",
              "Please make a video showing {caption}.", "Could you generate a video of {caption}?",
              "Animate {caption}.", "Give me a clip of {caption}.", "Render a video of {caption}.",
              "I'd like a video of {caption}.", "Produce an animation of {caption}.",
              "Can you show {caption} in a video?", "Make me a clip of {caption}.", "Generate a video: {caption}."),
}
GENERATION_ANSWER = "Sure thing! {token}"
T2M_ANSWERS = ("Here is {caption}. {token}", "Sure! Here is {caption}. {token}", "Here you go: {caption}. {token}",
               "Okay, this is {caption}. {token}", "Of course. Here is {caption}. {token}")

# MosIT: edits of the previous item (attribute -> new value -> phrasings)
_GENERIC_EDITS: dict[str, tuple[str, ...]] = {
    "colour": ("make it {value}", "Now make it {value}.", "Change the colour to {value}.",
               "Can you make it {value} instead?", "Same thing but {value}, please."),
    "shape": ("now make it a {value}", "Turn it into a {value}.", "Change the shape to a {value}.",
              "Make it a {value} instead."),
    "direction": ("now make it move {value}", "Make it go {value} instead.", "Have it move {value}.",
                  "Change the direction to {value}."),
}
_GENERIC_WORDS = {"colour": tuple(COLOURS), "shape": SHAPES, "direction": DIRECTIONS}
EDIT_PROMPTS: dict[str, dict[str, tuple[str, ...]]] = {
    **{attr: {v: tuple(t.format(value=v) for t in templates) for v in _GENERIC_WORDS[attr]}
       for attr, templates in _GENERIC_EDITS.items()},
    "pitch": {"low": ("make it lower", "Lower the pitch.", "Can you make it low-pitched?", "Make the pitch low."),
              "high": ("make it higher", "Raise the pitch.", "Make it high-pitched.", "Make the pitch high.")},
    "rhythm": {"beeping": ("make it beep", "Make it beeping.", "Turn it into beeps.", "Can it beep instead?"),
               "steady": ("make it steady", "Make it continuous.", "Stop the beeping.", "Make it a steady sound.")},
    "sound": {"buzz": ("make it a buzz", "Make it buzzy.", "Change it to a buzz.", "Make it sound like a buzz."),
              "tone": ("make it a tone", "Make it a pure tone.", "Change it to a tone.", "Make it a clean tone.")},
}
EDIT_ANSWERS = ("Here it is: {caption}. {token}", "Done! Now it is {caption}. {token}",
                "Sure, here is {caption}. {token}", "Okay, now it is {caption}. {token}")

# MosIT: text-only questions about the previous item (attribute -> (questions, answer))
QUESTIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "colour": (("What colour is it?", "Which colour was that?"), "It is {value}."),
    "shape": (("What shape is it?", "Which shape was that?"), "It is a {value}."),
    "direction": (("Which way does it move?", "What direction is it going?"), "It moves {value}."),
    "pitch": (("Is it high or low?", "How high is the pitch?"), "The pitch is {value}."),
    "rhythm": (("Is it steady or beeping?", "Does it beep?"), "It is {value}."),
    "sound": (("Is it a tone or a buzz?", "What kind of sound is it?"), "It is a {value}."),
}

# MosIT: modality switches that keep colour and shape
ANIMATE_PROMPTS = ("Now make a video of it moving {value}.", "Can you animate it moving {value}?",
                   "Make it move {value} in a video.")
STILL_PROMPTS = ("Show me a picture of it.", "Can you draw it as a still image?", "Make a picture of that shape.")

# MosIT: text-only small talk (human, gpt)
CHAT: tuple[tuple[str, str], ...] = (
    ("Thanks!", "You're welcome! Anything else?"),
    ("Nice, I like it.", "Glad you like it!"),
    ("Cool.", "Happy to help. What next?"),
    ("Hello!", "Hi! I can describe or create images, sounds and videos."),
    ("What can you do?", "I can describe and create images, sounds and videos."),
)


# What a right reply to small talk says, by the reference answer: any one reading, a reading being word groups
# that must all appear (any word of a group, plural allowed). Judged by `judge.judge_small_talk`.
_ABILITIES = (("image", "picture", "drawing", "photo"), ("sound", "audio"), ("video", "clip", "animation"))
SMALL_TALK_CONTENT: dict[str, tuple[tuple[tuple[str, ...], ...], ...]] = {
    "You're welcome! Anything else?": ((("welcome", "glad", "happy", "pleasure", "anytime", "no problem"),),),
    "Glad you like it!": ((("glad", "happy", "thank", "pleased"),),),
    "Happy to help. What next?": ((("happy", "help", "glad", "welcome", "what next", "anything else", "what else",
                                    "let me know"),),),
    "Hi! I can describe or create images, sounds and videos.": ((("hi", "hello", "hey", "greetings"),), _ABILITIES),
    "I can describe and create images, sounds and videos.": (_ABILITIES,),
}

# ---------------------------------------------------------------- test-only phrasings
# The test split's user turns use only these: none of them is, lower-cased and without punctuation, a train or
# val phrasing (tests/test_heldout.py checks), every kind has at least as many as train, and they include what
# people type ("What's this?", "can u draw a red triangle"). Answers (gpt turns) keep the train formats.
TEST_COMPREHENSION_PROMPTS: dict[str, tuple[str, ...]] = {
    "image": ("What's this?", "what is this", "Can you tell me what this picture is?",
              "Describe what you see in this image.", "Which object is in the picture?",
              "Tell me what this image contains.", "Explain this picture briefly.", "What does the picture contain?",
              "Look at this and tell me what it is.", "what's in the pic?", "Identify the object in this image.",
              "Name what is drawn here."),
    "audio": ("What's this?", "what sound is that", "Can you tell me what this recording is?",
              "Describe what you hear in this clip.", "What sort of noise is this?", "Tell me what this audio contains.",
              "Explain this sound briefly.", "Identify the sound in this recording.", "Listen to this: what is it?",
              "what am i hearing?", "How would you describe this recording?", "Name the sound you hear."),
    "video": ("What's this?", "what is happening here", "Can you tell me what this clip shows?",
              "Describe the movement you see.", "Where is the object going in this video?",
              "Tell me what this video contains.", "Explain this clip briefly.", "Identify what moves in this video.",
              "Watch this: what is it?", "what's going on in the clip?", "How would you describe this video?",
              "Summarise this video."),
}
TEST_T2M_REQUESTS: dict[str, tuple[str, ...]] = {
    "image": ("can u draw {caption}", "pls draw {caption}", "I need a picture of {caption}.",
              "Could you create {caption} for me?", "draw me {caption} please", "Show {caption}.", "Make {caption}.",
              "Can I get an image of {caption}?", "Would you draw {caption}?", "picture of {caption}",
              "I would like to see a drawing of {caption}.", "Illustrate {caption}.",
              "Please show me an image with {caption}.", "Could I see {caption}?", "Draw a picture of {caption}, thanks.",
              "an image of {caption} please"),
    "audio": ("can u play {caption}", "pls make {caption}", "I need to hear {caption}.",
              "Could you sound {caption} for me?", "play me {caption} please", "Sound {caption}.", "Let's hear {caption}.",
              "Can I get audio of {caption}?", "Would you play {caption}?", "audio of {caption}",
              "I would like a recording of {caption}.", "Compose {caption}.",
              "Please make a sound clip with {caption}.", "Could I hear {caption}?", "Play a clip of {caption}, thanks.",
              "a sound of {caption} please"),
    "video": ("can u animate {caption}", "pls make a video of {caption}", "I need a clip of {caption}.",
              "Could you film {caption} for me?", "animate me {caption} please", "Video of {caption}.",
              "Let's watch {caption}.", "Can I get a video of {caption}?", "Would you animate {caption}?",
              "clip of {caption}", "I would like an animation of {caption}.", "Film {caption}.",
              "Please make a short video with {caption}.", "Could I see a clip of {caption}?",
              "Make an animated clip of {caption}, thanks.", "a video of {caption} please"),
}
_TEST_GENERIC_EDITS: dict[str, tuple[str, ...]] = {
    "colour": ("Make this {value}.", "can u make it {value}", "Recolour it {value}.", "Paint it {value} instead.",
               "I'd prefer it {value}.", "Switch the colour to {value}."),
    "shape": ("Make this a {value}.", "can u turn it into a {value}", "Reshape it into a {value}.",
              "I'd prefer a {value}.", "Swap the shape for a {value}."),
    "direction": ("Make this move {value}.", "can u make it go {value}", "Let it travel {value}.",
                  "I'd prefer it moving {value}.", "Send it {value} instead."),
}
TEST_EDIT_PROMPTS: dict[str, dict[str, tuple[str, ...]]] = {
    **{attr: {v: tuple(t.format(value=v) for t in templates) for v in _GENERIC_WORDS[attr]}
       for attr, templates in _TEST_GENERIC_EDITS.items()},
    "pitch": {"low": ("Lower it.", "can u make it deeper", "Drop the pitch.", "Make it sound lower.", "Go down in pitch."),
              "high": ("Higher, please.", "can u make it higher pitched", "Raise it up.", "Make it sound higher.",
                       "Go up in pitch.")},
    "rhythm": {"beeping": ("Make it pulse on and off.", "can u make it beep", "Add beeps.", "Chop it into beeps.",
                           "Make it go beep beep."),
               "steady": ("Make it constant.", "can u make it steady", "No more beeping.", "Hold it without gaps.",
                          "Make it one long sound.")},
    "sound": {"buzz": ("Make it buzz.", "can u make it buzzy", "Switch it to a buzz.", "Give it a buzzing sound.",
                       "Make it harsh like a buzz."),
              "tone": ("Make it a sine tone.", "can u make it a tone", "Switch it to a tone.", "Give it a pure sound.",
                       "Make it smooth like a tone.")},
}
# an upload and an edit of it in the same turn (train never has an edit in an upload turn)
TEST_UPLOAD_EDITS: tuple[str, ...] = ("Make it {value}.", "Can you make this {value}?", "make this one {value} pls")
TEST_QUESTIONS: dict[str, tuple[str, ...]] = {
    "colour": ("what color is it", "Tell me its colour."),
    "shape": ("what shape is that", "Name its shape."),
    "direction": ("where is it heading", "Which direction does it go?"),
    "pitch": ("is it a high or a low sound", "Tell me the pitch."),
    "rhythm": ("is it continuous or beeping", "Does it pulse?"),
    "sound": ("is that a buzz or a tone", "Tell me the sound type."),
}
TEST_ANIMATE_PROMPTS = ("Animate it going {value}.", "can u make a clip of it moving {value}",
                        "Now show it moving {value} in a video.", "Make a video where it heads {value}.")
TEST_STILL_PROMPTS = ("Give me a still picture of it.", "can u show it as an image", "Now draw it without motion.",
                      "Freeze it into a picture.")
TEST_CHAT: tuple[tuple[str, str], ...] = (
    ("Thank you so much.", "You're welcome! Anything else?"),
    ("great job", "Glad you like it!"),
    ("ok", "Happy to help. What next?"),
    ("Hi there!", "Hi! I can describe or create images, sounds and videos."),
    ("What are you able to do?", "I can describe and create images, sounds and videos."),
    ("nice one, thx", "Glad you like it!"),
)


# ---------------------------------------------------------------- requests about uploaded media
# What people try with an upload, phrased per split: the train tables first, then the TEST_ ones, none of which is a
# train phrasing of any kind (lower-cased, without punctuation, values masked; tests/test_heldout.py checks) except
# TEST_UPLOAD_EDITS' "Make it {value}.", which train has only as an edit of a generated item, never with an upload. Each
# upload request is one turn: the media tokens, a newline, the request. {value} = the new or asked word; {noun} /
# {one} = the plural / singular noun of the uploaded media (`MEDIA_NOUNS`).
MEDIA_NOUNS: dict[str, tuple[str, str]] = {"image": ("picture", "pictures"), "audio": ("sound", "sounds"),
                                           "video": ("clip", "clips")}
_UPLOAD_GENERIC_EDITS: dict[str, tuple[str, ...]] = {
    "colour": ("Turn this {value}.", "Could you colour this {value}?", "Make the shape {value}.",
               "Change its colour to {value}.", "I want this in {value}.", "Colour it {value}, please."),
    "shape": ("Turn this into a {value}.", "Make the shape a {value}.", "Change this to a {value}.",
              "Could this be a {value} instead?", "Replace the shape with a {value}."),
    "direction": ("Make this go {value}.", "Have this move {value} instead.", "Change its direction to {value}.",
                  "Let this move {value}.", "Could it head {value}?"),
}
UPLOAD_EDIT_PROMPTS: dict[str, dict[str, tuple[str, ...]]] = {
    **{attr: {v: tuple(t.format(value=v) for t in templates) for v in _GENERIC_WORDS[attr]}
       for attr, templates in _UPLOAD_GENERIC_EDITS.items()},
    "pitch": {"high": ("Same but higher.", "Make this higher.", "Raise this one's pitch.", "Can you pitch this up?"),
              "low": ("Same but lower.", "Make this lower.", "Lower this one's pitch.", "Can you pitch this down?")},
    "rhythm": {"beeping": ("Make this beep.", "Can you make the sound pulse?", "Turn this into beeping.",
                           "Put gaps in this sound."),
               "steady": ("Make this steady.", "Make the sound continuous.", "Remove the gaps.",
                          "Turn this into one long note.")},
    "sound": {"buzz": ("Can you make the sound buzzier?", "Make this a buzz.", "Give this a buzzy sound.",
                       "Turn this into a buzz."),
              "tone": ("Make the sound purer.", "Make this a tone.", "Give this a smooth sound.",
                       "Turn this into a tone.")},
}
UPLOAD_REVERSE_PROMPTS = ("Reverse the direction.", "Make it go the other way.", "Flip the direction of motion.")
OPPOSITE_DIRECTIONS = {"left": "right", "right": "left", "up": "down", "down": "up"}
UPLOAD_ANIMATE_PROMPTS = ("Animate this moving {value}.", "Make a video of this going {value}.",
                          "Turn this picture into a clip moving {value}.", "Can this move {value} in a video?")
UPLOAD_STILL_PROMPTS = ("Give me a picture of the shape in this clip.", "Draw a still of this video.",
                        "Make a single frame of this.", "Turn this clip into an image.")
# yes/no questions about one upload: attribute -> asked word -> phrasings
UPLOAD_CHECKS: dict[str, dict[str, tuple[str, ...]]] = {
    "colour": {v: (f"Is this {v}?", f"Is the shape {v}?") for v in COLOURS},
    "shape": {v: (f"Is this a {v}?", f"Is the shape a {v}?") for v in SHAPES},
    "direction": {v: (f"Is it moving {v}?", f"Does this go {v}?") for v in DIRECTIONS},
    "pitch": {"high": ("Is this higher than a middle tone?", "Is this a high sound?"),
              "low": ("Is this lower than a middle tone?", "Is this a low sound?")},
    "rhythm": {"beeping": ("Is this beeping?", "Does this sound have gaps?"),
               "steady": ("Is this steady?", "Is this sound continuous?")},
    "sound": {"buzz": ("Is this a buzz?", "Does this sound buzzy?"), "tone": ("Is this a tone?", "Is this a pure tone?")},
}
# two uploads of one modality: which of them has a word (attribute -> word -> phrasings), whether they share an
# attribute's word (attribute -> phrasings)
PAIR_WHICH: dict[str, dict[str, tuple[str, ...]]] = {
    "colour": {v: (f"Which one of these is {v}?", f"Which {{one}} is {v}?") for v in COLOURS},
    "shape": {v: (f"Which one of these shows a {v}?", f"Which {{one}} has the {v}?") for v in SHAPES},
    "direction": {v: (f"Which one of these moves {v}?", f"Which {{one}} goes {v}?") for v in DIRECTIONS},
    "pitch": {"high": ("Which one of these is higher?", "Which {one} is high?"),
              "low": ("Which one of these is lower?", "Which {one} is low?")},
    "rhythm": {"beeping": ("Which one of these is beeping?", "Which {one} beeps?"),
               "steady": ("Which one of these is steady?", "Which {one} is continuous?")},
    "sound": {"buzz": ("Which one of these is a buzz?", "Which {one} buzzes?"),
              "tone": ("Which one of these is a tone?", "Which {one} is a pure tone?")},
}
PAIR_SAME: dict[str, tuple[str, ...]] = {
    "colour": ("Do these two {noun} have the same colour?", "Are both the same colour?"),
    "shape": ("Do these two {noun} show the same shape?", "Are both the same shape?"),
    "direction": ("Do these two {noun} move the same way?", "Are both going the same direction?"),
    "pitch": ("Do these two {noun} have the same pitch?", "Is the pitch of both the same?"),
    "rhythm": ("Do these two {noun} have the same rhythm?", "Is the rhythm of both the same?"),
    "sound": ("Are these two {noun} the same kind of sound?", "Is the timbre of both the same?"),
}
# answers (shared by every split): {caption} / {first}, {second} are world captions of the uploads
CHECK_ANSWERS: dict[str, tuple[str, ...]] = {"yes": ("Yes, it is {caption}.", "Yes. This is {caption}."),
                                             "no": ("No, it is {caption}.", "No. This is {caption}.")}
PAIR_VERDICTS: dict[str, str] = {"yes": "Yes.", "no": "No.", "first": "The first one.", "second": "The second one."}
PAIR_ANSWER = "{verdict} The first is {first}, the second is {second}."


@dataclass(frozen=True)
class UploadBook:
    """One split's phrasings of requests about uploaded media (see the tables above)."""

    edits: dict[str, dict[str, tuple[str, ...]]]   # attribute -> new word -> edit of the upload
    reverse: tuple[str, ...]                       # direction edits to the opposite direction
    animate: tuple[str, ...]                       # image upload -> video, {value} = direction
    still: tuple[str, ...]                         # video upload -> image
    checks: dict[str, dict[str, tuple[str, ...]]]  # attribute -> asked word -> yes/no question about one upload
    which: dict[str, dict[str, tuple[str, ...]]]   # attribute -> asked word -> which of two uploads has it
    same: dict[str, tuple[str, ...]]               # attribute -> do two uploads share its word


_TEST_UPLOAD_GENERIC_EDITS: dict[str, tuple[str, ...]] = {
    "colour": ("Make it {value}.", "Can you make this {value}?", "make this one {value} pls", "I want it {value}.",
               "{value} please", "Could this be {value} instead?"),
    "shape": ("Could you make it a {value}?", "can u make this a {value}", "I want a {value} instead.",
              "Redraw this as a {value}.", "make that a {value} pls"),
    "direction": ("can u make this go {value}", "I want it heading {value}.", "Move it {value} instead.",
                  "Have it go {value} now.", "make that go {value} pls"),
}
TEST_UPLOAD_EDIT_PROMPTS: dict[str, dict[str, tuple[str, ...]]] = {
    **{attr: {v: tuple(t.format(value=v) for t in templates) for v in _GENERIC_WORDS[attr]}
       for attr, templates in _TEST_UPLOAD_GENERIC_EDITS.items()},
    "pitch": {"high": ("higher pls", "Could it be higher?", "Shift it up in pitch.", "Make the pitch go up."),
              "low": ("lower pls", "Could it be lower?", "Shift it down in pitch.", "Make the pitch go down.")},
    "rhythm": {"beeping": ("make it beep on and off", "Could it pulse?", "Give it a beeping rhythm.",
                           "I want it choppy."),
               "steady": ("make it continuous pls", "Could it be constant?", "Give it a steady rhythm.",
                          "I want it unbroken.")},
    "sound": {"buzz": ("Could it buzz instead?", "make it buzzier", "Change this into a buzz.", "I want it rough."),
              "tone": ("Could it be smoother?", "make it less buzzy", "Change this into a tone.", "I want it clean.")},
}
TEST_UPLOAD_REVERSE_PROMPTS = ("reverse it", "Can it go the opposite way?", "Run it backwards.")
TEST_UPLOAD_ANIMATE_PROMPTS = ("Make it move {value}.", "can u animate this going {value}",
                               "Put this in motion, heading {value}.", "I want a clip of this moving {value}.")
TEST_UPLOAD_STILL_PROMPTS = ("Show me the shape from this clip.", "can u give me a still of it",
                             "Take a snapshot of the shape.", "Draw the thing in this clip, without motion.")
TEST_UPLOAD_CHECKS: dict[str, dict[str, tuple[str, ...]]] = {
    "colour": {v: (f"is it {v}", f"Would you call this {v}?") for v in COLOURS},
    "shape": {v: (f"is that a {v}", f"Would you call this a {v}?") for v in SHAPES},
    "direction": {v: (f"is it heading {v}", f"Is the motion going {v}?") for v in DIRECTIONS},
    "pitch": {"high": ("is this above a middle tone", "Is the pitch high?"),
              "low": ("is this below a middle tone", "Is the pitch low?")},
    "rhythm": {"beeping": ("is it pulsing", "Does it go on and off?"),
               "steady": ("is it constant", "Does it play without gaps?")},
    "sound": {"buzz": ("is that buzzy", "Does it sound like a buzz?"),
              "tone": ("is that a clean tone", "Does it sound like a tone?")},
}
TEST_PAIR_WHICH: dict[str, dict[str, tuple[str, ...]]] = {
    "colour": {v: (f"Which of these two {{noun}} is {v}?", f"which one's {v}") for v in COLOURS},
    "shape": {v: (f"Which of these two {{noun}} is a {v}?", f"which one's a {v}") for v in SHAPES},
    "direction": {v: (f"Which of these two {{noun}} is heading {v}?", f"which one's going {v}") for v in DIRECTIONS},
    "pitch": {"high": ("Which of these two {noun} is higher in pitch?", "which one's higher"),
              "low": ("Which of these two {noun} is lower in pitch?", "which one's lower")},
    "rhythm": {"beeping": ("Which of these two {noun} pulses?", "which one's beeping"),
               "steady": ("Which of these two {noun} is constant?", "which one's steady")},
    "sound": {"buzz": ("Which of these two {noun} has a buzzy timbre?", "which one's the buzz"),
              "tone": ("Which of these two {noun} has a pure timbre?", "which one's the tone")},
}
TEST_PAIR_SAME: dict[str, tuple[str, ...]] = {
    "colour": ("Are these two {noun} the same colour?", "same colour?"),
    "shape": ("Are these two {noun} the same shape?", "same shape?"),
    "direction": ("Are these two {noun} going the same direction?", "same direction?"),
    "pitch": ("Are these two {noun} the same pitch?", "same pitch?"),
    "rhythm": ("Are these two {noun} the same rhythm?", "same rhythm?"),
    "sound": ("Are these two {noun} the same type of sound?", "same timbre?"),
}


def question_senses(uploads: UploadBook) -> dict[str, tuple[str, str, str | None]]:
    """Every question of `uploads` about uploaded media, as typed -> (form, attribute, asked word or None):
    form 'check' (yes/no about one upload), 'which' (which of two has the word) or 'same' (do two share it)."""
    senses: dict[str, tuple[str, str, str | None]] = {}

    def add(text: str, sense: tuple[str, str, str | None]) -> None:
        if senses.setdefault(text, sense) != sense:
            raise ValueError(f"{text!r} asks both {senses[text]} and {sense}")

    nouns = [(m, one, many) for m, (one, many) in MEDIA_NOUNS.items()]
    for attribute, by_word in uploads.checks.items():
        for word, phrasings in by_word.items():
            for text in phrasings:
                add(text, ("check", attribute, word))
    for attribute, by_word in uploads.which.items():
        for word, phrasings in by_word.items():
            for text in phrasings:
                for _, one, many in nouns:
                    add(text.format(one=one, noun=many), ("which", attribute, word))
    for attribute, phrasings in uploads.same.items():
        for text in phrasings:
            for _, one, many in nouns:
                add(text.format(one=one, noun=many), ("same", attribute, None))
    return senses


TRAIN_UPLOADS = UploadBook(UPLOAD_EDIT_PROMPTS, UPLOAD_REVERSE_PROMPTS, UPLOAD_ANIMATE_PROMPTS, UPLOAD_STILL_PROMPTS,
                           UPLOAD_CHECKS, PAIR_WHICH, PAIR_SAME)
TEST_UPLOADS = UploadBook(TEST_UPLOAD_EDIT_PROMPTS, TEST_UPLOAD_REVERSE_PROMPTS, TEST_UPLOAD_ANIMATE_PROMPTS,
                          TEST_UPLOAD_STILL_PROMPTS, TEST_UPLOAD_CHECKS, TEST_PAIR_WHICH, TEST_PAIR_SAME)


@dataclass(frozen=True)
class Phrasebook:
    """The user-turn phrasings of one split (answers are shared); see TRAIN_BOOK and TEST_BOOK."""

    comprehension: dict[str, tuple[str, ...]]        # modality -> prompts after an upload
    t2m: dict[str, tuple[str, ...]]                  # modality -> request templates with {caption}
    edits: dict[str, dict[str, tuple[str, ...]]]     # attribute -> new value -> prompts
    questions: dict[str, tuple[str, ...]]            # attribute -> questions (answers: QUESTIONS)
    animate: tuple[str, ...]                         # templates with {value} = direction
    still: tuple[str, ...]
    chat: tuple[tuple[str, str], ...]                # (human, gpt)
    uploads: UploadBook = TRAIN_UPLOADS              # requests about uploaded media (the task records)
    upload_edits: tuple[str, ...] = ()               # colour edits typed with an upload inside the random
                                                     # dialogues ({value}); () = none


TRAIN_BOOK = Phrasebook(COMPREHENSION_PROMPTS, T2M_REQUESTS, EDIT_PROMPTS, {k: q for k, (q, _) in QUESTIONS.items()},
                        ANIMATE_PROMPTS, STILL_PROMPTS, CHAT, TRAIN_UPLOADS)
TEST_BOOK = Phrasebook(TEST_COMPREHENSION_PROMPTS, TEST_T2M_REQUESTS, TEST_EDIT_PROMPTS, TEST_QUESTIONS,
                       TEST_ANIMATE_PROMPTS, TEST_STILL_PROMPTS, TEST_CHAT, TEST_UPLOADS, TEST_UPLOAD_EDITS)
BOOKS = {"train": TRAIN_BOOK, "val": TRAIN_BOOK, "test": TEST_BOOK}  # split -> its phrasings
