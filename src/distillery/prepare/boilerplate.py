"""Boilerplate: wording that benchmark items share with each other, and stock phrases of prompts and contests.

A shared run of words is evidence of copying only when it is the problem's own wording. "where m and n are
relatively prime positive integers. Find m+n" closes dozens of AIME problems, and "The input is given from Standard
Input in the following format" opens the input section of hundreds of AtCoder problems: a fresh problem in either
style shares them with a benchmark item without copying it. `Boilerplate` marks the words of a text covered by such
a run (a `window`-word run found in `min_items` or more benchmark items, or a stock phrase); n-gram overlap is then
counted on the remaining words only.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from distillery.schema.records import normalise_text

_WORD = re.compile(r"\w+")

STOCK_PHRASES: tuple[str, ...] = (
    # Prompt templates around a problem.
    "Please reason step by step, and put your final answer within \\boxed{}.",
    ("Solve the following math problem step by step. The last line of your response should be of the form Answer: "
     "$Answer (without quotes) where $Answer is the answer to the problem."),
    "Return your final response within \\boxed{}.",
    "Let's think step by step and output the final answer within \\boxed{}.",
    "Solve the following problem step by step, explaining each step.",
    "Put your final answer in \\boxed{}.",
    ("Generate an executable Python function generated from the given prompt. The function should take stdin as input "
     "and print the output. Simply call the function after the definition."),
    ("Generate an executable Python function generated from the given prompt. Return the function body without "
     "invoking it at the final solution."),
    ("Read the inputs from stdin solve the problem and write the answer to stdout (do not directly test on the sample "
     "inputs)."),
    "Enclose your code within delimiters as follows.",
    # Competition math.
    "where m and n are relatively prime positive integers. Find m+n.",
    "where m and n are relatively prime positive integers",
    "Find the remainder when N is divided by 1000.",
    "Express your answer as a common fraction.",
    "Express your answer in simplest radical form.",
    "Express your answer as a decimal to the nearest tenth.",
    "Express your answer in terms of pi.",
    "Enter all the solutions, separated by commas.",
    # Programming contests.
    "The input is given from Standard Input in the following format:",
    "Print the answer.",
    "All input values are integers.",
    "The first line contains a single integer t the number of test cases.",
    "The first line of each test case contains a single integer n",
    "It is guaranteed that the sum of n over all test cases does not exceed",
    "For each test case, output a single integer",
    "You can output the answer in any case (upper or lower).",
    "For example, the strings \"yEs\", \"yes\", \"Yes\" and \"YES\" will be recognized as a positive answer.",
    "Return the minimum number of operations",
    "Since the answer may be very large, return it modulo 10^9 + 7.",
    # Instruction following.
    "Your entire response should be in English, and in all lowercase letters. No capital letters are allowed.",
    "Wrap your entire response with double quotation marks.",
    "Finish your response with this exact phrase",
    "No other words should follow this phrase.",
    "Do not include keywords",
    "in the response.",
    "Your response should contain at least",
    "Highlight at least",
    "sections in your answer with markdown, i.e. *highlighted section*.",
    "Your answer must contain a title, wrapped in double angular brackets, such as <<poem of joy>>.",
    "There should be",
    "paragraphs. Paragraphs are separated with the markdown divider: ***",
)
"""Phrases that never count as evidence of copying, whoever uses them; operators extend them per corpus."""


def words(text: str) -> list[str]:
    return _WORD.findall(normalise_text(text))


class Boilerplate:
    """Runs of `window` words found in `min_items` or more benchmark items, plus the stock phrases."""

    def __init__(self, texts: Sequence[str], window: int, min_items: int, stock: Sequence[str] = STOCK_PHRASES) -> None:
        self.window = window
        counts: Counter[tuple[str, ...]] = Counter()
        for text in texts:
            tokens = words(text)
            counts.update({tuple(tokens[i:i + window]) for i in range(len(tokens) - window + 1)})
        self.shared = {run for run, count in counts.items() if count >= min_items}
        self.phrases = sorted({tuple(words(phrase)) for phrase in stock if words(phrase)}, key=len, reverse=True)
        self._by_first: dict[str, list[tuple[str, ...]]] = {}
        for phrase in self.phrases:
            self._by_first.setdefault(phrase[0], []).append(phrase)

    def mask(self, tokens: Sequence[str]) -> list[bool]:
        """True for each word of `tokens` covered by a shared run or a stock phrase."""
        covered = [False] * len(tokens)
        for start in range(len(tokens)):
            if tuple(tokens[start:start + self.window]) in self.shared:
                covered[start:start + self.window] = [True] * min(self.window, len(tokens) - start)
            for phrase in self._by_first.get(tokens[start], ()):
                if tuple(tokens[start:start + len(phrase)]) == phrase:
                    covered[start:start + len(phrase)] = [True] * len(phrase)
                    break
        return covered

    def content_words(self, text: str) -> list[str]:
        """The words of `text` that are not boilerplate, in order."""
        tokens = words(text)
        return [token for token, boiler in zip(tokens, self.mask(tokens)) if not boiler]
