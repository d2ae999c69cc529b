"""A small template library: the user's message and the assistant's reply as text.

PersonalityAdaptation's actions are assistant styles (ten traits in [0, 1], ``synth.TRAITS``
order), not words. To export preference pairs for fine-tuning a language model, each
context becomes a user message (its topic, mood and urgency) and each style a reply whose
sentences are chosen by the style's levels — warm or formal greeting, a direct fix or
options, steps for a conscientious style, a joke for a humorous one, a closing by
enthusiasm and formality. Two styles whose levels fall in the same bands render the same
reply; the exporter drops such pairs (``rewards.dpo``).

Levels: a trait below ⅓ is *low*, above ⅔ *high*, else *mid*.
"""

from __future__ import annotations

import numpy as np

from synth.archetypes import TASK_TYPES, TRAITS

__all__ = ["user_message", "assistant_reply", "SYSTEM_PROMPT", "vocabulary", "words"]

SYSTEM_PROMPT = "You are a helpful assistant. Adapt your style to the user."
_T = {name: i for i, name in enumerate(TRAITS)}
_TOPIC = {
    "content_generation": ("a draft for my newsletter", "write the draft"),
    "offer_routing": ("choosing the right plan", "compare the plans"),
    "support": ("an error when I log in", "reset the session"),
    "research": ("sources on remote work", "collect the sources"),
    "analysis": ("the numbers in my sales report", "check the totals"),
}
assert tuple(_TOPIC) == TASK_TYPES


def _band(x: float) -> int:
    return 0 if x < 1 / 3 else (2 if x > 2 / 3 else 1)


_MOOD = ("This is really frustrating. ", "", "Things are going well. ")
_HURRY = ("", "", " I need this quickly.")
_P = {
    "formal_greeting": "Thank you for your message.",
    "lively_greeting": "Hi there, great question!",
    "warmth": "I understand how you feel, and you are right to ask.",
    "direct": "Here is what to do: {fix}.",
    "indirect": "There are a few options, and one of them might be to {fix}.",
    "suggest": "I would suggest that you {fix}.",
    "steps": "First, save your work. Then follow the steps and check the result.",
    "open": "We could also try a new approach if that does not work.",
    "hedge": "I might be wrong about this, though.",
    "joke": "No spreadsheets were harmed in the making of this answer.",
    "excited": "I am so excited to hear how it goes!",
    "hope": "Hope this helps!",
    "regards": "Kind regards.",
    "plain": "Let me know how it goes.",
}


def user_message(topic: int, sentiment: float, urgency: float) -> str:
    """The user's message: ``topic`` an index of ``synth.TASK_TYPES``, ``sentiment`` and
    ``urgency`` the observed levels in [0, 1]."""
    need, _ = _TOPIC[TASK_TYPES[topic]]
    return f"{_MOOD[_band(sentiment)]}Can you help me with {need}?{_HURRY[_band(urgency)]}"


def assistant_reply(style: np.ndarray, topic: int) -> str:
    """The reply in assistant ``style`` ``(10,)`` about ``topic`` (module docstring)."""
    b = {name: _band(float(style[i])) for name, i in _T.items()}
    keys = []
    if b["formality"] == 2:
        keys.append("formal_greeting")
    elif b["extraversion"] == 2 or b["enthusiasm"] == 2:
        keys.append("lively_greeting")
    if b["empathy"] == 2 or b["agreeableness"] == 2:
        keys.append("warmth")
    keys.append(("indirect", "suggest", "direct")[b["directness"]])
    keys += [key for key, trait in (("steps", "conscientiousness"), ("open", "openness"),
                                    ("hedge", "neuroticism"), ("joke", "humor"))
             if b[trait] == 2]
    if b["enthusiasm"] == 2:
        keys.append("excited" if b["formality"] == 2 else "hope")
    else:
        keys.append("regards" if b["formality"] == 2 else "plain")
    fix = _TOPIC[TASK_TYPES[topic]][1]
    return " ".join(_P[key].format(fix=fix) for key in keys)


def vocabulary() -> list[str]:
    """Every word the templates can write (lower case, punctuation split off): what a
    tokenizer for the exported text needs."""
    texts = [SYSTEM_PROMPT, *_MOOD, *_HURRY, "Can you help me with ?"]
    for need, fix in _TOPIC.values():
        texts += [need, *(p.format(fix=fix) for p in _P.values())]
    return sorted({w for text in texts for w in words(text)})


def words(text: str) -> list[str]:
    """``text`` split into lower-case words and punctuation marks (how ``vocabulary``
    counts them)."""
    out = []
    for token in text.lower().split():
        core = token.rstrip(".,!?:")
        out += [core, *token[len(core):]] if core else list(token)
    return [w for w in out if w]
