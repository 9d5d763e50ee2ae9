#!/usr/bin/env python3
"""Checks a running `pagoda serve` with the official OpenAI Python client.

Usage: openai_conformance.py BASE_URL API_KEY   (BASE_URL like http://127.0.0.1:8000)
Exits non-zero on the first failed check.
"""
import sys

import json
import urllib.request

import openai

base, key = sys.argv[1].rstrip("/"), sys.argv[2]
client = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=120)
checks = 0


def check(cond, what):
    global checks
    if not cond:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)
    checks += 1


# Models list.
models = client.models.list()
ids = [m.id for m in models.data]
check(len(ids) == 1, f"one model listed, got {ids}")
model = ids[0]

# Completions, not streamed, n=2, logprobs, usage.
c = client.completions.create(model=model, prompt="The sky is", max_tokens=8, temperature=0, n=2, logprobs=2)
check(c.object == "text_completion" and c.id.startswith("cmpl-"), "completion object and id")
check(len(c.choices) == 2 and [ch.index for ch in c.choices] == [0, 1], "n=2 gives two choices")
check(c.choices[0].text == c.choices[1].text, "greedy choices agree")
lp = c.choices[0].logprobs
check(lp is not None and len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset), "completion logprobs shape")
check(all(isinstance(x, float) and x <= 0 for x in lp.token_logprobs), "token logprobs are <= 0")
check(all(len(t) >= 1 for t in lp.top_logprobs), "top logprobs present")
check(c.usage.completion_tokens == 2 * len(lp.tokens), f"usage counts both choices: {c.usage}")
check(c.usage.total_tokens == c.usage.prompt_tokens + c.usage.completion_tokens, "usage total")
req = urllib.request.Request(base + "/tokenize", data=json.dumps({"model": model, "prompt": "The sky is"}).encode(),
                             headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
pt = json.load(urllib.request.urlopen(req))
check(c.usage.prompt_tokens == pt["count"], f"prompt_tokens {c.usage.prompt_tokens} == tokenize count {pt['count']}")

# Completions streamed equal the non-streamed text.
plain = client.completions.create(model=model, prompt="Once upon a time", max_tokens=16, temperature=0.8, seed=42)
stream = client.completions.create(model=model, prompt="Once upon a time", max_tokens=16, temperature=0.8, seed=42,
                                   stream=True, stream_options={"include_usage": True})
text, usage, finish = "", None, None
for chunk in stream:
    for ch in chunk.choices:
        text += ch.text
        finish = ch.finish_reason or finish
    if chunk.usage is not None:
        usage = chunk.usage
check(text == plain.choices[0].text, f"streamed completion == non-streamed: {text!r} vs {plain.choices[0].text!r}")
check(usage is not None and usage.completion_tokens == plain.usage.completion_tokens, "stream usage chunk")
check(finish in ("length", "stop"), "stream finish_reason")

# Seed reproducibility.
s1 = client.completions.create(model=model, prompt="Random:", max_tokens=12, temperature=1.0, seed=123)
s2 = client.completions.create(model=model, prompt="Random:", max_tokens=12, temperature=1.0, seed=123)
check(s1.choices[0].text == s2.choices[0].text, "same seed, same text")

# Stop strings.
st = client.completions.create(model=model, prompt="1, 2, 3, 4, 5,", max_tokens=16, temperature=0, stop=[","])
check("," not in st.choices[0].text, f"stop string cut the text: {st.choices[0].text!r}")
check(st.choices[0].finish_reason == "stop", f"finish_reason stop, got {st.choices[0].finish_reason}")

# Chat, not streamed, with logprobs.
msgs = [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Name a color."}]
cc = client.chat.completions.create(model=model, messages=msgs, max_tokens=10, temperature=0, logprobs=True, top_logprobs=2)
check(cc.object == "chat.completion" and cc.id.startswith("chatcmpl-"), "chat object and id")
msg = cc.choices[0].message
check(msg.role == "assistant" and isinstance(msg.content, str) and msg.content, "assistant message")
content = cc.choices[0].logprobs.content
check(len(content) == cc.usage.completion_tokens, "one logprob entry per token")
check(all(len(e.top_logprobs) == 2 and e.bytes is not None for e in content), "top_logprobs and bytes")
check(cc.usage.total_tokens == cc.usage.prompt_tokens + cc.usage.completion_tokens, "chat usage total")

# Chat streamed equals non-streamed; n=2.
cs = client.chat.completions.create(model=model, messages=msgs, max_tokens=10, temperature=0, stream=True,
                                    stream_options={"include_usage": True})
text, role, usage = "", None, None
for chunk in cs:
    check(chunk.object == "chat.completion.chunk", "chunk object")
    for ch in chunk.choices:
        role = role or ch.delta.role
        text += ch.delta.content or ""
    usage = chunk.usage or usage
check(role == "assistant", "first chunk carries the role")
check(text == msg.content, f"streamed chat == non-streamed: {text!r} vs {msg.content!r}")
check(usage is not None and usage.completion_tokens == cc.usage.completion_tokens, "chat stream usage")
c2 = client.chat.completions.create(model=model, messages=msgs, max_tokens=6, n=2, temperature=1.0, seed=5)
check(len(c2.choices) == 2, "chat n=2")
check(2 <= c2.usage.completion_tokens <= 12, f"chat n=2 usage sums both choices: {c2.usage}")

# An invalid request raises BadRequestError; a wrong key raises AuthenticationError.
try:
    client.completions.create(model=model, prompt="x", max_tokens=8, n=0)
    check(False, "n=0 must fail")
except openai.BadRequestError as e:
    check(e.status_code == 400, "BadRequestError status")
try:
    client.chat.completions.create(model=model, messages=[], max_tokens=4)
    check(False, "empty messages must fail")
except openai.BadRequestError:
    checks += 1
try:
    client.completions.create(model="no-such-model", prompt="x", max_tokens=4)
    check(False, "unknown model must fail")
except openai.NotFoundError:
    checks += 1
bad = openai.OpenAI(base_url=base + "/v1", api_key="wrong-" + key, max_retries=0)
try:
    bad.models.list()
    check(False, "wrong API key must fail")
except openai.AuthenticationError as e:
    check(e.status_code == 401, "AuthenticationError status")

print(f"openai conformance: {checks} checks passed (openai {openai.__version__})")
