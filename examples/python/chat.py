#!/usr/bin/env python3
"""chat.py - talk to llava-server (or any OpenAI-compatible server) with the
Python standard library alone: no `openai` package, no `requests`.

    python3 examples/python/chat.py --base-url http://127.0.0.1:8080 \\
        --image models/demo/samples/sample_01_320x240.png "What is the color of the circle?"

A plain request prints the answer once it is complete; --stream asks for
server-sent events (`"stream": true`) and prints each piece of text as it
arrives. --image sends a local file inline as a base64 `data:` URI, the
form every OpenAI-compatible server accepts (http(s) URLs work too: pass
them as they are). Exit status: 0, or 1 with the server's error message.
"""
import argparse
import base64
import json
import mimetypes
import os
import sys
import urllib.error
import urllib.request


def image_url(path):
    """A local file as a data: URI (an http(s) or data: URL is kept as it is)."""
    if path.startswith(("http://", "https://", "data:")):
        return path
    mime = mimetypes.guess_type(path)[0] or "application/octet-stream"
    with open(path, "rb") as f:
        return "data:%s;base64,%s" % (mime, base64.b64encode(f.read()).decode("ascii"))


def request_body(args):
    content = [{"type": "text", "text": args.prompt}]
    if args.image:
        content.append({"type": "image_url", "image_url": {"url": image_url(args.image)}})
    body = {"model": args.model, "messages": [{"role": "user", "content": content}],
            "temperature": args.temperature, "stream": args.stream}
    if args.max_tokens:
        body["max_tokens"] = args.max_tokens
    return body


def post(args, body):
    """The open HTTP response of POST /v1/chat/completions."""
    headers = {"Content-Type": "application/json"}
    if args.api_key:
        headers["Authorization"] = "Bearer " + args.api_key
    req = urllib.request.Request(args.base_url.rstrip("/") + "/v1/chat/completions",
                                 data=json.dumps(body).encode("utf-8"), headers=headers,
                                 method="POST")
    return urllib.request.urlopen(req, timeout=args.timeout)


def sse_events(response):
    """The data of each server-sent event, until "data: [DONE]".

    An event is one or more "data:" lines ended by a blank line; lines
    starting with ":" are comments (keep-alives) and other fields (event:,
    id:) are not used by the chat API."""
    data = []
    for raw in response:
        line = raw.decode("utf-8").rstrip("\r\n")
        if line.startswith("data:"):
            data.append(line[5:].lstrip(" "))
        elif not line and data:
            event = "\n".join(data)
            data = []
            if event == "[DONE]":
                return
            yield json.loads(event)
    if data and "\n".join(data) != "[DONE]":
        yield json.loads("\n".join(data))


def chat(args):
    body = request_body(args)
    with post(args, body) as response:
        if not args.stream:
            answer = json.load(response)
            print(answer["choices"][0]["message"]["content"] or "")
            return
        for chunk in sse_events(response):
            if chunk.get("error"):
                raise RuntimeError(chunk["error"].get("message", chunk["error"]))
            for choice in chunk.get("choices", []):
                text = choice.get("delta", {}).get("content")
                if text:
                    sys.stdout.write(text)
                    sys.stdout.flush()
        print()


def main():
    p = argparse.ArgumentParser(description="Ask llava-server a question, with an image or not.")
    p.add_argument("prompt", help="the question or instruction")
    p.add_argument("--base-url", default="http://127.0.0.1:8080",
                   help="the server (default %(default)s; the client adds /v1/chat/completions)")
    p.add_argument("--image", help="an image file (sent as a base64 data: URI) or an http(s) URL")
    p.add_argument("--stream", action="store_true", help="print the answer as it is generated")
    p.add_argument("--model", default="llava", help="the model name sent (llava-server takes any)")
    p.add_argument("--max-tokens", type=int, default=0,
                   help="tokens to generate at most (default: the server's)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--api-key", default=os.environ.get("LLAVA_API_KEY"),
                   help="for a server started with --api-key (default: $LLAVA_API_KEY)")
    p.add_argument("--timeout", type=float, default=600, help="seconds (default %(default)s)")
    args = p.parse_args()
    try:
        chat(args)
    except urllib.error.HTTPError as e:
        detail = e.read().decode("utf-8", "replace")
        try:
            detail = json.loads(detail)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            pass
        sys.exit("chat.py: HTTP %d: %s" % (e.code, detail))
    except (urllib.error.URLError, OSError, RuntimeError) as e:
        sys.exit("chat.py: %s" % (getattr(e, "reason", None) or e))


if __name__ == "__main__":
    main()
