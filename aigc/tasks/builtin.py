"""The built-in tasks. Each is one declaration; its template lives in ``templates/<template>.j2``."""

from __future__ import annotations

from .task import Param, Task

_LANGUAGE = Param("language", help="Write the output in this language.")

SUMMARIZE = Task(
    name="summarize",
    template="summarize",
    input="text",
    long_input="condense",
    summary="Summarize a text (long texts are split and summarized in rounds).",
    example='aigc summarize article.txt --length "3 sentences"',
    params=(
        Param("text", required=True, positional=True, nonblank=True, help="The text to summarize."),
        Param("length", nonblank=True, help='How long, e.g. "3 sentences", "100 words".'),
        _LANGUAGE,
        Param("focus", nonblank=True, help="What the summary should focus on."),
    ),
)

TRANSLATE = Task(
    name="translate",
    template="translate",
    input="text",
    long_input="translate",
    reply_scale=2.0,
    summary="Translate a text, keeping its formatting (code blocks are left alone).",
    example="aigc translate page.md --to English -o page.en.md",
    params=(
        Param("text", required=True, positional=True, nonblank=True, help="The text to translate."),
        Param("to", required=True, nonblank=True, help="Target language, e.g. en, German."),
        Param("source", nonblank=True, flag="--from", help="Source language (detected if omitted)."),
        Param("tone", nonblank=True, help="Tone, e.g. formal."),
    ),
)

ANSWER = Task(
    name="answer",
    template="answer",
    input="context",
    long_input="select",
    aliases=("ask", "qa"),
    cli_argument="question",
    summary="Answer a question, from a context document when given (long ones: the most relevant parts).",
    example='aigc answer "When does the museum open?" --context leaflet.txt',
    params=(
        Param("question", required=True, positional=True, nonblank=True, help="The question."),
        Param("context", nonblank=True, flag="--context", help="Answer from this file (- for standard input)."),
    ),
)

NEWS = Task(
    name="news",
    template="news",
    input="facts",
    long_input="condense",
    aliases=("write_news",),
    review="aigc.factcheck:review_news",
    summary="Write a news article from facts or notes; its numbers, dates, names and quotations are checked "
            "against the facts (what they do not hold is listed in the warnings).",
    example='aigc news notes.txt --style "neutral wire-service" --length "about 300 words"',
    params=(
        Param("facts", required=True, positional=True, nonblank=True, help="The facts or notes."),
        Param("style", nonblank=True, help='e.g. "neutral wire-service", "feature".'),
        Param("length", nonblank=True, help='e.g. "about 300 words".'),
        Param("headline", bool, help="Start with a headline."),
        Param("audience", nonblank=True, help='e.g. "general readers".'),
        Param("strict", bool, help="Fail instead of warning when the draft states facts the input does not."),
    ),
)

CHAT = Task(
    name="chat",
    input="messages",
    summary="Send chat messages as they are (the OpenAI request format).",
    example="aigc batch run requests.toml   # task = \"chat\": a Batch API request file",
    params=(
        Param("messages", list, required=True, positional=True,
              help='A list of {"role": ..., "content": ...} messages.'),
    ),
)

CLASSIFY = Task(
    name="classify",
    template="classify",
    input="text",
    flow="aigc.classify:classify_flow",
    cli_output="parsed",
    summary="Choose a label (or, with --multi, every label that applies) for a text from a given set, with a "
            "short reason and a confidence where the backend gives one.",
    example="aigc classify ticket.txt --labels billing,shipping,returns,other",
    params=(
        Param("text", required=True, positional=True, nonblank=True, help="The text to classify."),
        Param("labels", list, required=True, help="The labels to choose from, comma-separated."),
        Param("multi", bool, help="Choose every label that applies (none, one or several)."),
        Param("reason", bool, default=True, help="Give a short reason."),
    ),
)

SENTIMENT = Task(
    name="sentiment",
    template="sentiment",
    input="text",
    flow="aigc.classify:classify_flow",
    cli_output="parsed",
    summary="The sentiment a text expresses (positive, negative or neutral), with a short reason and a "
            "confidence where the backend gives one.",
    example="aigc sentiment review.txt",
    params=(
        Param("text", required=True, positional=True, nonblank=True, help="The text to judge."),
        Param("labels", list, default=("positive", "negative", "neutral"), help="The labels to choose from."),
        Param("reason", bool, default=True, help="Give a short reason."),
    ),
)

BUILTIN = (SUMMARIZE, TRANSLATE, ANSWER, NEWS, CHAT, CLASSIFY, SENTIMENT)
