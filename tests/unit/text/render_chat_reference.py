"""Renders chat templates the way Hugging Face transformers does (apply_chat_template), with
Debian's python3-jinja2: an ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks and
the loopcontrols extension, transformers' tojson (json.dumps(ensure_ascii=False)),
raise_exception and strftime_now; variables messages, tools (None when absent), documents
(None), add_generation_prompt, bos_token, eos_token and the case's kwargs.

  /usr/bin/python3 render_chat_reference.py TEMPLATES.json CONVERSATIONS.json

TEMPLATES.json: {"name": {"template": ..., "bos_token": ..., "eos_token": ...}}. Prints
{"template/case": {"text": ...} or {"error": message}} as JSON on stdout.
"""
import json
import sys
from datetime import datetime

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def strftime_now(fmt):
    return datetime.now().strftime(fmt)


def main():
    templates = json.load(open(sys.argv[1], encoding="utf-8"))
    cases = json.load(open(sys.argv[2], encoding="utf-8"))["cases"]
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    out = {}
    for tname, t in templates.items():
        compiled = env.from_string(t["template"])
        for case in cases:
            key = f"{tname}/{case['name']}"
            try:
                text = compiled.render(messages=case["messages"], tools=case.get("tools"),
                                       documents=None,
                                       add_generation_prompt=case["add_generation_prompt"],
                                       bos_token=t["bos_token"], eos_token=t["eos_token"],
                                       **case.get("kwargs", {}))
                out[key] = {"text": text}
            except Exception as e:  # noqa: BLE001 - the reference records every failure
                out[key] = {"error": f"{type(e).__name__}: {e}"}
    json.dump(out, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
