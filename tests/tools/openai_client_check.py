#!/usr/bin/env python3
"""Checks a running `muninn serve` with the official `openai` Python client, unchanged.

Usage (the server must already run; see docs/SERVER.md):
    python3 -m venv /tmp/openai-venv && /tmp/openai-venv/bin/pip install openai
    build/muninn serve --bank /tmp/bank --port 8080 &
    /tmp/openai-venv/bin/python tests/tools/openai_client_check.py --port 8080 [--api-key KEY]

It runs a chat completion, a streamed chat completion (and checks that greedy streaming says
exactly what the plain response said), a legacy completion, embeddings (the client's default
base64 encoding and float), and the model list. Exits 0 when every check passes.
"""
import argparse
import math
import sys

import openai


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--api-key", default="none")
    args = ap.parse_args()
    client = openai.OpenAI(base_url=f"http://{args.host}:{args.port}/v1", api_key=args.api_key,
                           max_retries=0, timeout=300)
    failures = []

    def check(name, cond, detail=""):
        print(("ok   " if cond else "FAIL ") + name + (f": {detail}" if detail else ""))
        if not cond:
            failures.append(name)

    models = client.models.list()
    ids = [m.id for m in models.data]
    check("models.list", len(ids) >= 1, ", ".join(ids))
    model = ids[0]

    messages = [{"role": "user", "content": "Name one colour."}]
    chat = client.chat.completions.create(model=model, messages=messages, max_tokens=8,
                                          temperature=0)
    text = chat.choices[0].message.content
    check("chat.completions", chat.object == "chat.completion" and bool(text), repr(text))
    check("chat usage", chat.usage.completion_tokens > 0 and
          chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens)

    pieces, finish, usage = [], None, None
    stream = client.chat.completions.create(model=model, messages=messages, max_tokens=8,
                                            temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                finish = choice.finish_reason
    streamed = "".join(pieces)
    check("chat stream", streamed == text, f"{streamed!r} vs {text!r}")
    check("chat stream finish_reason", finish in ("stop", "length"), str(finish))
    check("chat stream usage", usage is not None and usage.completion_tokens > 0)

    comp = client.completions.create(model=model, prompt="The sky is", max_tokens=5,
                                     temperature=0)
    check("completions", comp.object == "text_completion" and bool(comp.choices[0].text),
          repr(comp.choices[0].text))

    emb = client.embeddings.create(model=model, input=["lighthouse", "harbour wall"])
    vecs = [d.embedding for d in emb.data]
    norms = [math.sqrt(sum(x * x for x in v)) for v in vecs]
    check("embeddings (base64 default)", len(vecs) == 2 and all(abs(n - 1) < 1e-3 for n in norms),
          f"dim {len(vecs[0])}")
    embf = client.embeddings.create(model=model, input="lighthouse", encoding_format="float")
    check("embeddings (float)", max(abs(a - b) for a, b in zip(embf.data[0].embedding, vecs[0]))
          < 1e-6)

    try:
        client.chat.completions.create(model=model, messages=messages, max_tokens=-1)
        check("bad max_tokens is 400", False, "no error")
    except openai.BadRequestError as e:
        check("bad max_tokens is 400", e.status_code == 400, str(e)[:80])

    print("all checks passed" if not failures else f"{len(failures)} checks failed")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
