#!/usr/bin/env python3
"""Regenerates Tests/Fixtures/template-scenarios.json.

Renders every chat template in ../shared/golden/templates with extra conversations (tool calls,
tool results, reasoning, multi-part content) using Python Jinja2 configured like Transformers'
apply_chat_template, and stores a FNV-1a 64-bit hash and length of each rendering (or the error).
"""
import datetime, glob, json, os, sys
from jinja2 import nodes
from jinja2.exceptions import TemplateError
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

class AssistantTracker(Extension):
    tags = {"generation"}
    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.Scope(body).set_lineno(lineno)

def raise_exception(message):
    raise TemplateError(message)

def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[AssistantTracker, loopcontrols])
env.filters["tojson"] = tojson
env.globals["raise_exception"] = raise_exception
env.globals["strftime_now"] = lambda f: datetime.datetime(2026, 1, 1, 0, 0, 0).strftime(f)

def fnv1a64(text):
    h = 0xcbf29ce484222325
    for b in text.encode("utf-8"):
        h ^= b
        h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h

tc = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 3, "opts": {"unit": "c", "list": [1, 2.5]}}}}
tc_str = {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}
tools = [{"type": "function", "function": {"name": "get_weather", "description": "Get the weather <for> a \"city\"", "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}, "days": {"type": "integer", "enum": [1, 2, 3], "default": 1}, "flags": {"type": "array", "items": {"type": "string"}}}, "required": ["city"]}}}]
scenarios = {
    "toolcall": [{"role": "system", "content": "Sys é 日本"}, {"role": "user", "content": "Weather?"}, {"role": "assistant", "content": "", "tool_calls": [tc]}, {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "{\"temp\": 20}"}, {"role": "assistant", "content": "It is 20."}, {"role": "user", "content": "Thanks"}],
    "toolcall_str": [{"role": "user", "content": "Weather?"}, {"role": "assistant", "content": None, "tool_calls": [tc_str]}, {"role": "tool", "tool_call_id": "call_2", "content": "sunny"}],
    "reasoning": [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "<think>\nhmm\n</think>\n\nA1", "reasoning_content": "hmm"}, {"role": "user", "content": "Q2"}],
    "multipart": [{"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "text", "text": " here"}]}],
}

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
records = []
for path in sorted(glob.glob(os.path.join(root, "../shared/golden/templates/*.jinja"))):
    source = open(path, encoding="utf-8").read()
    for name, messages in scenarios.items():
        for with_tools in (False, True):
            rec = {"template": os.path.basename(path), "scenario": name, "with_tools": with_tools}
            try:
                out = env.from_string(source).render(messages=messages, tools=tools if with_tools else None,
                                                     documents=None, add_generation_prompt=True,
                                                     bos_token="<s>", eos_token="</s>")
                rec["fnv1a64"] = fnv1a64(out)
                rec["length"] = len(out.encode("utf-8"))
            except Exception as e:
                rec["error"] = f"{type(e).__name__}: {e}"
            records.append(rec)
with open(os.path.join(root, "Tests/Fixtures/template-scenarios.json"), "w", encoding="utf-8") as f:
    json.dump({"generator": "Jinja2 " + __import__("jinja2").__version__, "tools": tools,
               "scenarios": scenarios, "records": records}, f, ensure_ascii=False, indent=0)
print(len(records), "records")
