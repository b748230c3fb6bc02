"""A small RAG chat over a running flywheel server, built from LangChain runnables, that learns from its users.

    flywheel serve                                              # in one terminal
    flywheel ingest flywheel/data/scifact/corpus.jsonl.gz       # the shipped SciFact abstracts
    python examples/chatbot/chat.py                             # --url, --api-key, --k, --filter key=value

Type a question: the bot answers and lists the sources it used. Then type the number of a source to open it
(a click; several numbers for several), `+` or `-` to rate the answer (a thumbs up or down for every source
it cited), both (`2 -`), or just the next question. `quit` or end of input stops; queued feedback is sent
before it exits. The answer comes from a deterministic stand-in LLM from langchain-core that repeats its
prompt, so the example runs offline: what it prints is what a real model would be asked. Swap
`stand_in_llm()` for any LangChain chat model to get real answers; nothing else changes.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableLambda, RunnableParallel, RunnablePassthrough

from flywheel.errors import InvalidInput
from flywheel.integrations.langchain import FlywheelRetriever

PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", "You answer questions about biomedical research from the sources given, citing them as [n]."),
        ("human", "Answer from the sources below, citing them as [n]: {question}\n{sources}"),
    ]
)
FEEDBACK = re.compile(r"^\s*((\d+\s*)*)([+-])?\s*$")  # "2", "1 3", "-", "2 +": feedback, not a question


def stand_in_llm() -> BaseChatModel:
    """A deterministic chat model that repeats its prompt's last message (offline, no API key)."""
    return ParrotFakeChatModel()


def format_sources(docs: list[Document], chars: int = 160) -> str:
    """The numbered sources as the prompt shows them to the model."""
    return "\n".join(f"[{i}] {' '.join(d.page_content.split())[:chars]}" for i, d in enumerate(docs, 1))


def build_chain(retriever: FlywheelRetriever, llm: BaseChatModel) -> Runnable:
    """question -> {"question", "sources": [Document], "answer": str}: retrieve, prompt, answer."""
    answer = (
        RunnableLambda(lambda x: {"question": x["question"], "sources": format_sources(x["sources"])})
        | PROMPT
        | llm
        | StrOutputParser()
    )
    return RunnableParallel(question=RunnablePassthrough(), sources=retriever).assign(answer=answer)


def chat(lines: Iterable[str], chain: Runnable, retriever: FlywheelRetriever, out: TextIO) -> dict[str, int]:
    """Run the conversation: each line is a question, or feedback on the last answer's sources.

    Returns:
        {"questions", "clicks", "thumbs"}: what the user did.
    """
    counts = {"questions": 0, "clicks": 0, "thumbs": 0}
    last: list[Document] = []
    for line in lines:
        text = line.strip()
        if text.lower() in ("quit", "exit"):
            break
        if not text:
            continue
        match = FEEDBACK.match(text)
        if match:
            if not last:
                print("ask a question first", file=out)
                continue
            clicks = [int(n) for n in match.group(1).split()]
            thumbs = {"+": "up", "-": "down"}.get(match.group(3) or "")
            try:
                events = retriever.feedback(last, clicked=clicks or None, thumbs=thumbs)  # type: ignore[arg-type]
            except InvalidInput as exc:  # it names the position that is not a source
                print(f"? {exc}", file=out)
                continue
            counts["clicks"] += len(clicks)
            counts["thumbs"] += thumbs is not None
            for n in clicks:
                print(f"opened [{n}]: {last[n - 1].page_content[:300]}", file=out)
            print(f"feedback queued: {len(events)} events", file=out)
            continue
        result = chain.invoke(text)
        last = result["sources"]
        counts["questions"] += 1
        print(f"answer: {result['answer']}", file=out)
        print("sources:", file=out)
        for doc in last:
            first_line = doc.page_content.split("\n", 1)[0][:100]
            print(f"  [{doc.metadata['rank']}] {doc.metadata['score']:.3f}  {doc.id}  {first_line}", file=out)
    return counts


def parse_filter(pairs: list[str]) -> dict[str, Any] | None:
    """`key=value` options as a flywheel metadata filter (a key given twice means either value)."""
    values: dict[str, list[str]] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--filter {pair!r}: use key=value")
        values.setdefault(key, []).append(value)
    return {key: found[0] if len(found) == 1 else found for key, found in values.items()} or None


def typed_lines() -> Iterable[str]:
    """Lines typed at a `you>` prompt, until end of input or Ctrl-C."""
    while True:
        try:
            yield input("you> ")
        except (EOFError, KeyboardInterrupt):
            return


def main(argv: list[str] | None = None) -> int:
    """Parse options, chat on stdin and stdout, send queued feedback, print what was sent."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the flywheel server")
    parser.add_argument("--api-key", default=None, help="a search key, when the server has keys")
    parser.add_argument("--k", type=int, default=3, help="sources per answer")
    parser.add_argument("--filter", action="append", default=[], help="metadata filter key=value (repeatable)")
    args = parser.parse_args(argv)
    retriever = FlywheelRetriever(url=args.url, api_key=args.api_key, k=args.k, filter=parse_filter(args.filter))
    if sys.stdin.isatty():
        print("ask a question; then a source number to open it, + or - to rate the answer; quit to stop")
    lines = typed_lines() if sys.stdin.isatty() else sys.stdin
    try:
        counts = chat(lines, build_chain(retriever, stand_in_llm()), retriever, sys.stdout)
    finally:
        retriever.close()  # sends the feedback still queued
    stats = retriever.client.feedback.stats  # type: ignore[union-attr]
    print(f"{counts['questions']} questions, {counts['clicks']} clicks, {counts['thumbs']} ratings")
    print(f"feedback: {stats.sent} events sent, {stats.rejected + stats.failed + stats.dropped} not stored")
    return 0


if __name__ == "__main__":
    sys.exit(main())
