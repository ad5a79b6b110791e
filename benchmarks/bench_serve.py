"""Load test of `auralm serve`: concurrent clients against a model folder, with and without continuous batching.

    python benchmarks/bench_serve.py MODEL_DIR [--clients 32] [--seconds 60] [--max-batch 16] [--max-tokens 48]
                                               [--natural-length]
    python benchmarks/bench_serve.py DIR --build-random   # first writes a random model of the demo model's shape

For each mode the server runs in its own process on 127.0.0.1 (a free port) and the clients loop for the given
time, each sending a short audio clip plus a question and waiting for the whole answer; the loops end at the
deadline. Answer lengths vary between clients (0.5x to 1.5x the mean), as real answers do, and are held at those
lengths with the `min_tokens` extension (the model's stop token is not allowed before them; vLLM's serving
benchmark does the same with ignore_eos), so both modes do the same work whatever the model answers;
`--natural-length` lets answers end where the model stops instead. Prints the tokens/s the
server generated in the window (from its /health counters), completed requests/s, p50/p99 latency of completed
requests and errors per mode, and the token throughput of batched serving over one-at-a-time (max_batch=1).
Traffic stays on the loopback interface.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf

SR = 16000
HOST = "127.0.0.1"


# ---- a random model of the demo model's shape (Whisper tiny encoder + a 135M Qwen2-architecture decoder) ------
def build_random(folder: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from auralm import AudioLM  # the public class: save_pretrained is attached to it
    from auralm.config import AudioLMConfig, DecoderConfig, EncoderConfig
    from auralm.processor import Processor

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # The chat template's words and the question as whole tokens, so prompts are as long as a real tokenizer's.
    corpus = ["system user assistant You are a helpful assistant. Audio 1: What is that sound?"] * 50
    tok.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>",
                            "<|audio_eos|>"])
    cfg = AudioLMConfig(
        encoder=EncoderConfig(n_mels=80, d_model=384, n_layers=4, n_heads=6, ffn_dim=1536),
        # Ids past the tokenizer's few hundred decode to nothing, but the output layer costs what the real one does.
        decoder=DecoderConfig(vocab_size=49152, d_model=576, n_layers=30, n_heads=9, n_kv_heads=3, ffn_dim=1536,
                              tie_embeddings=True),
        audio_token_id=tok.token_to_id("<|AUDIO|>"),
    )
    model = AudioLM(cfg)
    for p in model.parameters():  # small weights keep the random activations finite through 30 layers
        p.data.normal_(0.0, 0.02)
    model.save_pretrained(folder)
    Processor(tok, n_mels=80).save_pretrained(folder)


# ---- the server ------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_server(model_dir: Path, max_batch: int, clients: int, max_tokens: int,
                 threads: int | None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "auralm.cli", "serve", "--model", str(model_dir), "--host", HOST, "--port",
           str(port), "--model-name", "bench", "--max-batch", str(max_batch), "--max-queue", str(2 * clients),
           "--max-tokens-limit", str(max(answer_lengths(clients, max_tokens))), "--log-level", "warning"]
    if threads:
        cmd += ["--threads", str(threads)]
    proc = subprocess.Popen(cmd)
    url = f"http://{HOST}:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise RuntimeError("the server did not come up within 120 s")


# ---- the clients -----------------------------------------------------------------------------------------------
def answer_lengths(clients: int, mean: int) -> list[int]:
    """Answer lengths spread evenly over [mean / 2, 3 mean / 2], so rows finish, and new ones join, at all times."""
    return [max(1, round(mean * (0.5 + i / max(clients - 1, 1)))) for i in range(clients)]


def request_body(client: int, audio_seconds: float, max_tokens: int, fixed_length: bool = True) -> dict:
    rng = np.random.default_rng(client)
    t = np.arange(int(audio_seconds * SR)) / SR
    wave = 0.3 * np.sin(2 * np.pi * (150 + 10 * client) * t) + 0.02 * rng.standard_normal(t.size)
    buf = io.BytesIO()
    sf.write(buf, wave.astype(np.float32), SR, format="WAV", subtype="PCM_16")
    audio = {"type": "input_audio", "input_audio": {"data": base64.b64encode(buf.getvalue()).decode(), "format": "wav"}}
    question = {"type": "text", "text": "What is that sound?"}
    body = {"model": "bench", "max_tokens": max_tokens, "messages": [{"role": "user", "content": [audio, question]}]}
    if fixed_length:
        body["min_tokens"] = max_tokens
    return body


async def load(url: str, clients: int, seconds: float, audio_seconds: float, max_tokens: int,
               fixed_length: bool) -> dict:
    latencies: list[float] = []
    errors = 0
    bodies = [request_body(i, audio_seconds, n, fixed_length)
              for i, n in enumerate(answer_lengths(clients, max_tokens))]
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=seconds + 60) as http:

        async def generated() -> int:
            return (await http.get(url + "/health")).json()["stats"]["generated_tokens"]

        warm = await http.post(url + "/v1/chat/completions", json=bodies[0])
        warm.raise_for_status()
        first = await generated()
        start = time.monotonic()
        end = start + seconds

        async def client(i: int) -> None:
            nonlocal errors
            while time.monotonic() < end:
                sent = time.monotonic()
                try:
                    r = await asyncio.wait_for(http.post(url + "/v1/chat/completions", json=bodies[i]),
                                               timeout=max(end - sent, 0.001))
                except asyncio.TimeoutError:
                    return  # still running at the deadline: not counted
                except httpx.HTTPError:
                    errors += 1
                    continue
                if r.status_code != 200:
                    errors += 1
                    continue
                latencies.append(time.monotonic() - sent)

        await asyncio.gather(*(client(i) for i in range(clients)))
        elapsed = time.monotonic() - start
        # Tokens the server generated in the window, answers cut off at the deadline included: with answers
        # taking tens of seconds, counting whole answers only would measure where the deadline fell.
        tokens = await generated() - first
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else float("nan")

    return {"requests": len(latencies), "errors": errors, "rps": len(latencies) / elapsed,
            "tok_s": tokens / elapsed, "p50": pct(0.50), "p99": pct(0.99),
            "mean": statistics.fmean(latencies) if latencies else float("nan")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--build-random", action="store_true", help="write a random demo-shaped model to MODEL_DIR first")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--max-batch", type=int, default=16, help="batch size of the batched mode")
    ap.add_argument("--max-tokens", type=int, default=48, help="mean tokens per answer (spread over 0.5x-1.5x)")
    ap.add_argument("--audio-seconds", type=float, default=3.0)
    ap.add_argument("--natural-length", action="store_true", help="let answers end at the model's stop token")
    ap.add_argument("--threads", type=int, help="torch threads of the server (default: torch's choice)")
    args = ap.parse_args()
    if args.build_random and not (args.model_dir / "config.json").is_file():
        build_random(args.model_dir)
    results = {}
    for mode, batch in (("batched", args.max_batch), ("one-at-a-time", 1)):
        proc, url = start_server(args.model_dir, batch, args.clients, args.max_tokens, args.threads)
        try:
            results[mode] = asyncio.run(load(url, args.clients, args.seconds, args.audio_seconds, args.max_tokens,
                                         not args.natural_length))
        finally:
            proc.terminate()
            proc.wait(30)
    print(f"\n{args.clients} clients x {args.seconds:g} s, {args.audio_seconds:g} s audio + question, "
          f"{args.max_tokens} tokens per answer{' at most' if args.natural_length else ''}, model {args.model_dir}, server threads {args.threads or 'default'}")
    print(f"{'mode':<16}{'max_batch':>10}{'requests':>10}{'errors':>8}{'req/s':>9}{'tok/s':>9}{'p50 s':>9}{'p99 s':>9}")
    for mode, batch in (("batched", args.max_batch), ("one-at-a-time", 1)):
        r = results[mode]
        print(f"{mode:<16}{batch:>10}{r['requests']:>10}{r['errors']:>8}{r['rps']:>9.2f}{r['tok_s']:>9.1f}"
              f"{r['p50']:>9.2f}{r['p99']:>9.2f}")
    single = results["one-at-a-time"]["tok_s"]
    ratio = results["batched"]["tok_s"] / single if single else float("inf")
    print(f"throughput with batching / one-at-a-time: {ratio:.2f}x")
    return 0 if results["batched"]["errors"] == 0 and results["one-at-a-time"]["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
