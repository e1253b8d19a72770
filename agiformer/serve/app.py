"""The playground's web app: a static page and a small JSON / server-sent-events API over the
checkpoints under one directory.

    GET  /                    the page
    GET  /api/checkpoints     the checkpoints under the directory (relative paths)
    POST /api/inspect         {checkpoint, prompt, effort?, plasticity?} → surprise per byte, reasoning
                              steps per patch, attention share per layer and patch (`agiformer.eval.inspect`)
    GET  /api/generate?checkpoint=…&prompt=…&max_bytes=…&temperature=…&top_p=…&effort=…&plasticity=…&seed=…
                              server-sent events, one per byte: {"text", "byte", "per_s", "unit", "steps"};
                              then "done"

A MAG checkpoint (a memory beside a frozen Hugging Face LM) opens on its base: its generation streams
tokens (max_bytes counts them), and inspection gives surprise per token and each MAG layer's gate.

Bounded: a prompt of at most MAX_PROMPT_BYTES, at most MAX_NEW_BYTES per generation, at most
`max_generations` streaming at once (more get 429); a bad parameter gets 400 with a one-line reason; a
checkpoint outside the directory gets 403. A client that disconnects stops its generation.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import math
import threading
import time
from collections import OrderedDict
from pathlib import Path

import torch
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.routing import Route

from agiformer.errors import AGIFormerError
from agiformer.eval.inspect import byte_surprise, inspect_model
from agiformer.models import AGIFormer, ByteStream, resolve_checkpoint, sample_byte
from agiformer.models.config import read_config_values
from agiformer.train.adapt import load_trained

MAX_PROMPT_BYTES = 16_384
MAX_NEW_BYTES = 4_096
STATIC = Path(__file__).parent / "static"


class BadRequest(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


class Models:
    """The checkpoints under `root`, loaded on first use, the last `keep` of them kept in memory."""

    def __init__(self, root: Path, *, keep: int = 2):
        self.root, self.keep = root.resolve(), keep
        self.loaded: OrderedDict[Path, torch.nn.Module] = OrderedDict()
        self.lock = threading.Lock()

    def list(self) -> list[str]:
        found = sorted({path.parent for path in self.root.rglob("config.json")
                        if (path.parent / "model.safetensors").is_file() and not path.parent.name.endswith((".old", ".new"))})
        return [str(path.relative_to(self.root)) if path != self.root else "." for path in found]

    def get(self, name: str) -> torch.nn.Module:
        path = (self.root / name).resolve()
        if path != self.root and self.root not in path.parents:
            raise BadRequest(403, f"checkpoint {name!r} is outside the served directory")
        try:
            path = resolve_checkpoint(path)
            with self.lock:
                if path not in self.loaded:
                    self.loaded[path] = load_any(path)
                    while len(self.loaded) > self.keep:
                        self.loaded.popitem(last=False)
                self.loaded.move_to_end(path)
                return self.loaded[path]
        except AGIFormerError as error:
            raise BadRequest(404, str(error)) from None


class MAGEntry:
    """A MAG checkpoint opened on its frozen base, with the base's tokenizer."""

    def __init__(self, path: Path):
        from agiformer.mag.eval import open_for_eval

        self.model, self.codec, _ = open_for_eval(str(path))


def load_any(path: Path):
    """A byte model or adapter (`load_trained`), or a MAG checkpoint with its base (`MAGEntry`)."""
    if read_config_values(path / "config.json").get("model_type") == "mag":
        return MAGEntry(path)
    return load_trained(path)


def number(values, name: str, default: float | None, low: float, high: float, *, integer: bool = False):
    text = values.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text) if integer else float(text)
    except (TypeError, ValueError):
        raise BadRequest(400, f"{name} must be a {'whole ' if integer else ''}number, got {text!r}") from None
    if not (math.isfinite(value) and low <= value <= high):
        raise BadRequest(400, f"{name} must be in [{low:g}, {high:g}], got {text}")
    return value


def prompt_bytes(values) -> bytes:
    prompt = values.get("prompt", "")
    if not isinstance(prompt, str):
        raise BadRequest(400, "prompt must be text")
    data = prompt.encode("utf-8")
    if len(data) > MAX_PROMPT_BYTES:
        raise BadRequest(413, f"prompt of {len(data):,} bytes; at most {MAX_PROMPT_BYTES:,}")
    return data


def build_app(root: str | Path, *, max_generations: int = 2) -> Starlette:
    models = Models(Path(root))
    slots = threading.BoundedSemaphore(max_generations)
    # one model call at a time: inspection hooks the model's layers, and a generation sharing the model
    # would otherwise run through them; a generation holds it for one byte at a time
    busy = threading.Lock()

    def locked(fn, *args):
        with busy:
            return fn(*args)

    async def page(request: Request):
        return FileResponse(STATIC / "index.html")

    async def checkpoints(request: Request):
        return JSONResponse({"checkpoints": models.list()})

    async def inspect(request: Request):
        try:
            values = await request.json()
        except json.JSONDecodeError:
            raise BadRequest(400, "the body must be a JSON object") from None
        if not isinstance(values, dict):
            raise BadRequest(400, "the body must be a JSON object")
        model = await asyncio.to_thread(models.get, str(values.get("checkpoint", "")))
        prompt = prompt_bytes(values)
        if not prompt:
            raise BadRequest(400, "prompt is empty")
        effort = number(values, "effort", None, 0, 1)
        plasticity = number(values, "plasticity", None, 1e-6, 1)
        result = await asyncio.to_thread(locked, describe, model, prompt, effort, plasticity)
        return JSONResponse(result)

    async def generate(request: Request):
        values = request.query_params
        model = await asyncio.to_thread(models.get, values.get("checkpoint", ""))
        prompt = prompt_bytes(values)
        max_bytes = number(values, "max_bytes", 200, 1, MAX_NEW_BYTES, integer=True)
        temperature = number(values, "temperature", 0.8, 0, 10)
        top_p = number(values, "top_p", None, 1e-6, 1)
        effort = number(values, "effort", None, 0, 1)
        plasticity = number(values, "plasticity", None, 1e-6, 1)
        seed = number(values, "seed", None, 0, 2 ** 63 - 1, integer=True)
        if not slots.acquire(blocking=False):
            raise BadRequest(429, f"{max_generations} generations are already streaming; try again when one ends")

        async def events():
            try:
                stream = await asyncio.to_thread(locked, Streamer, model, prompt, effort, plasticity, temperature,
                                                 top_p, seed)
                for _ in range(max_bytes):
                    if await request.is_disconnected():
                        return
                    event = await asyncio.to_thread(locked, stream.next)
                    yield f"data: {json.dumps(event)}\n\n"
                yield f"event: done\ndata: {json.dumps(stream.totals())}\n\n"
            finally:
                slots.release()

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    async def refuse(request: Request, error: BadRequest):
        return JSONResponse({"error": error.reason}, status_code=error.status)

    return Starlette(routes=[Route("/", page), Route("/api/checkpoints", checkpoints),
                             Route("/api/inspect", inspect, methods=["POST"]), Route("/api/generate", generate)],
                     exception_handlers={BadRequest: refuse})


def describe(model, prompt: bytes, effort: float | None, plasticity: float | None) -> dict:
    """What the page draws for a prompt: surprise per byte; for AGIFORMER also reasoning steps per
    patch and each layer's attention share per patch; for MAG surprise per token and each MAG layer's
    gate (the memory's share) per token."""
    if isinstance(model, MAGEntry):
        return describe_mag(model, prompt.decode("utf-8", errors="replace"))
    result = {"bytes": list(prompt), "surprise_bits": byte_surprise(model, prompt, plasticity=plasticity, effort=effort)}
    if isinstance(model, AGIFormer):
        inspected = inspect_model(model, prompt, plasticity=plasticity, effort=effort)
        result.update(patch_size=inspected["patch_size"], patching=inspected["patching"], reasoning_steps=inspected["reasoning_steps"],
                      max_steps=model.config.reasoning_steps,
                      attention_share=[layer.get("attention_share") for layer in inspected["layers"]])
    return result


@torch.no_grad()
def describe_mag(entry: MAGEntry, text: str) -> dict:
    ids = entry.codec(text)
    if not ids:
        raise BadRequest(400, "prompt is empty")
    gates = {}

    def keep(name: str):
        def hook(module, args, out):
            gates[name] = torch.sigmoid(out)[0].mean(-1)  # the gate's mean over the hidden units, per token
        return hook

    handles = [layer.gate.register_forward_hook(keep(name)) for name, layer in entry.model.mag.items()]
    try:
        x = torch.tensor([ids])
        logits, _ = entry.model(x)
    finally:
        for handle in handles:
            handle.remove()
    log_p = torch.log_softmax(logits[0, :-1].double(), -1).gather(-1, x[0, 1:, None])[:, 0]
    return {"tokens": [entry.codec.decode([i]) for i in ids], "surprise_bits": [None] + (-log_p / math.log(2)).tolist(),
            "mag_layers": [int(name) for name in gates], "memory_share": [gates[name].tolist() for name in gates]}


class Streamer:
    """Sampled bytes one at a time with their speed and, for AGIFORMER, the reasoning steps of the
    position that decoded each; text is emitted as whole UTF-8 characters."""

    def __init__(self, model, prompt: bytes, effort, plasticity, temperature, top_p, seed):
        self.model, self.temperature, self.top_p = model, temperature, top_p
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.started, self.count = time.perf_counter(), 0
        self.stream = self.bytes = self.mag = None
        if isinstance(model, MAGEntry):
            self.mag, self.ids, self.text = model, model.codec(prompt.decode("utf-8", errors="replace")), ""
            self.logits, self.state = None, None
        elif isinstance(model, AGIFormer):
            self.stream = ByteStream(model, prompt, plasticity=plasticity, effort=effort)
        else:
            self.bytes = model.generate(prompt, MAX_NEW_BYTES, temperature=temperature, top_p=top_p, seed=seed)

    @torch.no_grad()
    def next_token(self) -> dict:
        """One MAG token: sampled from the logits after the prompt and what was generated, the memory on."""
        entry = self.mag
        if self.logits is None:
            self.logits, self.state = entry.model(torch.tensor([self.ids or [entry.codec.eos_token_id]]), logits_to_keep=1)
        token = sample_byte(self.logits[0, -1], temperature=self.temperature, top_p=self.top_p, generator=self.generator)
        self.logits, self.state = entry.model(torch.tensor([[token]]), self.state)
        self.ids.append(token)
        self.count += 1
        generated = entry.codec.decode(self.ids[-self.count:])
        piece, self.text = generated[len(self.text):], generated
        return {"text": piece, "token": token, "steps": None, "unit": "tokens", "per_s": self.rate()}

    def next(self) -> dict:
        if self.mag is not None:
            return self.next_token()
        steps = None
        if self.stream is not None:
            steps = self.stream.reasoning_steps
            byte = sample_byte(self.stream.next_logits(), temperature=self.temperature, top_p=self.top_p,
                               generator=self.generator)
            self.stream.push(byte)
        else:
            byte = next(self.bytes)
        self.count += 1
        return {"text": self.decoder.decode(bytes([byte])), "byte": byte, "steps": steps, "unit": "bytes",
                "per_s": self.rate()}

    def rate(self) -> float:
        return self.count / max(time.perf_counter() - self.started, 1e-9)

    def totals(self) -> dict:
        return {"count": self.count, "unit": "tokens" if self.mag is not None else "bytes", "per_s": self.rate()}
