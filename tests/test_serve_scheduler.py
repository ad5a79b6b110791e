"""The scheduler: continuous batching is exact, full queues answer 429, gone clients free their slots, and one
failing request never harms the others."""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from serve_support import ServerThread, audio_part, tiny_chat, user, wav_bytes

from auralm.infer.engine import DecodeBatch
from auralm.serve.app import create_app
from auralm.serve.scheduler import Delta, Failed, Finished, Job, Scheduler
from auralm.serve.settings import ServeSettings
from auralm.serve.stops import StopText

MODEL = "tiny-audio"

# Different prompts, audio lengths, answer lengths and decoding modes, so rows join and leave at different steps.
REQUESTS = [
    {"messages": [user(audio_part(wav_bytes(1.0, 11)), "What's that sound?")], "max_tokens": 30},
    {"messages": [user("Describe the audio in detail.")], "max_tokens": 45, "temperature": 0.9, "seed": 3},
    {"messages": [user(audio_part(wav_bytes(4.0, 12)), "Transcribe this recording, please.")], "max_tokens": 20},
    {"messages": [user(audio_part(wav_bytes(2.5, 13)))], "max_tokens": 38, "temperature": 1.2, "top_p": 0.9,
     "seed": 8},
    {"messages": [user("what is seven plus five?")], "max_tokens": 26},
    {"messages": [user(audio_part(wav_bytes(0.7, 14)), audio_part(wav_bytes(1.6, 15)), "Compare them.")],
     "max_tokens": 33},
]


@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    return tiny_chat(tmp_path_factory.getbasetemp())


@pytest.mark.slow
def test_concurrent_requests_share_decode_steps_and_get_their_solo_answers(chat, monkeypatch):
    # Each decode step takes at least 20 ms, so the staggered requests below overlap however fast the machine is.
    from auralm.infer.engine import DecodeBatch

    step = DecodeBatch.step

    def slow_step(self):
        time.sleep(0.02)
        return step(self)

    monkeypatch.setattr(DecodeBatch, "step", slow_step)
    settings = ServeSettings(model_name=MODEL, max_batch=4, max_queue=16)
    with ServerThread(create_app(chat, settings)) as server:
        stats = server.server.config.app.state.scheduler.stats
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=60)

        def ask(i: int, delay: float = 0.0):
            time.sleep(delay)
            r = client.chat.completions.create(model=MODEL, **REQUESTS[i])
            return r.choices[0].message.content, r.usage.completion_tokens

        solo = [ask(i) for i in range(len(REQUESTS))]
        solo_steps, merges_before = stats.steps, stats.merges
        with ThreadPoolExecutor(len(REQUESTS)) as pool:  # staggered, so most join a batch already decoding
            together = list(pool.map(ask, range(len(REQUESTS)), [0.03 * i for i in range(len(REQUESTS))]))
        together_steps = stats.steps - solo_steps
    assert together == solo
    assert [n for _, n in solo] == [r["max_tokens"] for r in REQUESTS]
    assert stats.merges > merges_before, "no request joined a running batch"
    assert stats.max_rows == settings.max_batch
    # Alone the answers took one step per token each; together they shared steps.
    assert together_steps < 0.6 * solo_steps


def test_full_queue_answers_429_and_a_gone_client_frees_its_slot(chat):
    settings = ServeSettings(model_name=MODEL, max_batch=1, max_queue=1, max_tokens_limit=4000, retry_after_seconds=2)
    with ServerThread(create_app(chat, settings)) as server:
        scheduler = server.server.config.app.state.scheduler
        long_body = {"model": MODEL, "messages": [user("hi")], "max_tokens": 4000, "stream": True}
        with httpx.Client(timeout=30) as http:
            with http.stream("POST", server.url + "/v1/chat/completions", json=long_body) as long_answer:
                assert long_answer.status_code == 200
                deadline = time.monotonic() + 10
                while scheduler.running < 1:  # the long answer is decoding: the one slot is taken
                    assert time.monotonic() < deadline, "the long answer never started"
                    time.sleep(0.01)
                waiting: dict = {}
                waiter = threading.Thread(target=lambda: waiting.update(r=httpx.post(
                    server.url + "/v1/chat/completions", timeout=30,
                    json={"model": MODEL, "messages": [user("short")], "max_tokens": 5})))
                waiter.start()
                deadline = time.monotonic() + 10
                while scheduler.queued < 1:
                    assert time.monotonic() < deadline, "the second request never queued"
                    time.sleep(0.01)
                client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
                with pytest.raises(openai.RateLimitError) as err:
                    client.chat.completions.create(model=MODEL, messages=[user("one too many")])
                assert err.value.response.headers["retry-after"] == "2"
                assert err.value.body["code"] == "queue_full"
                assert not waiting
            # The streaming client hung up after a few tokens: its row must leave, and the queued request run.
            waiter.join(10)
            assert waiting["r"].status_code == 200 and waiting["r"].json()["usage"]["completion_tokens"] == 5
            assert scheduler.stats.cancelled == 1
            assert scheduler.stats.steps < 1000, "the abandoned answer was decoded to the end"

            # A non-streaming client that gives up frees its slot the same way.
            with pytest.raises(httpx.ReadTimeout):
                http.post(server.url + "/v1/chat/completions", timeout=0.5,
                          json={"model": MODEL, "messages": [user("hi")], "max_tokens": 4000})
            deadline = time.monotonic() + 10
            while scheduler.stats.cancelled < 2 or scheduler.running:
                assert time.monotonic() < deadline, "the abandoned request kept its slot"
                time.sleep(0.02)
        health = httpx.get(server.url + "/health").json()
        assert (health["status"], health["queued"], health["running"]) == ("ok", 0, 0)
        assert health["stats"]["cancelled"] == 2 and health["stats"]["completed"] == 1


# ---- the scheduler without HTTP --------------------------------------------------------------------------------
def run_jobs(scheduler: Scheduler, jobs_inputs, configs) -> list[list]:
    """Submit jobs together and collect each one's events until it ends."""
    boxes = [queue.SimpleQueue() for _ in jobs_inputs]
    for inputs, cfg, box in zip(jobs_inputs, configs, boxes):
        scheduler.submit(Job(inputs, cfg, box.put))
    results = []
    for box in boxes:
        events = []
        while not events or not isinstance(events[-1], (Finished, Failed)):
            events.append(box.get(timeout=30))
        results.append(events)
    return results


def test_one_failing_request_never_harms_the_others(chat):
    good = chat.inputs([chat.conversation("What's that sound?", wav_bytes(1.0, 5))])
    bad = dict(good)
    bad["input_features"] = good["input_features"][..., :40]  # too few audio frames for its placeholders
    bad["feature_attention_mask"] = good["feature_attention_mask"][..., :40]
    cfg = chat.config(max_new_tokens=6)
    scheduler = Scheduler(chat.model, chat.processor.decode, max_batch=4, max_queue=8)
    scheduler.start()
    try:
        first, broken, last = run_jobs(scheduler, [good, bad, good], [cfg] * 3)
        assert isinstance(broken[-1], Failed) and broken[-1].error.status == 500
        assert scheduler.stats.batched_prefills == 0  # a batch holding the bad request fell back to one by one
        assert "placeholder" not in broken[-1].error.message  # no internals in the message
        assert first == last and first[-1] == Finished("length", int(good["attention_mask"].sum()), 6)

        # A decode step that raises fails the rows of that step only; the thread keeps serving.
        real_forward = chat.model.forward
        calls = {"n": 0}

        def flaky(*args, **kwargs):
            calls["n"] += 1
            tokens = kwargs["input_ids"] if kwargs.get("input_ids") is not None else kwargs["inputs_embeds"]
            if tokens.shape[1] == 1 and calls["n"] == 3:
                raise RuntimeError("simulated failure inside a decode step")
            return real_forward(*args, **kwargs)

        chat.model.forward = flaky
        try:
            failed = run_jobs(scheduler, [good], [cfg])[0]
        finally:
            del chat.model.forward
        assert isinstance(failed[-1], Failed) and "simulated" not in failed[-1].error.message
        assert scheduler.alive
        assert run_jobs(scheduler, [good], [cfg])[0] == first
    finally:
        scheduler.close()


def test_waiting_requests_are_prefilled_together_and_get_their_solo_answers(chat):
    prompts = [chat.inputs([chat.conversation("What's that sound?", wav_bytes(1.0, 5))]),
               chat.inputs([chat.conversation("Describe it.", wav_bytes(3.2, 6))]),
               chat.inputs([chat.conversation("what is seven plus five?")]),
               chat.inputs([chat.conversation("Compare them.", [wav_bytes(0.7, 7), wav_bytes(1.6, 8)])])]
    configs = [chat.config(max_new_tokens=n) for n in (6, 9, 4, 7)]
    solo = []
    for inputs, cfg in zip(prompts, configs):
        batch = DecodeBatch.prefill(chat.model, inputs, [cfg])
        while not batch.rows[0].finished:
            batch.step()
        solo.append(batch.rows[0].new_tokens)
    scheduler = Scheduler(chat.model, chat.processor.decode, max_batch=4, max_queue=8)
    boxes = [queue.SimpleQueue() for _ in prompts]
    for inputs, cfg, box in zip(prompts, configs, boxes):  # all waiting before the thread starts
        scheduler._queue.put(Job(inputs, cfg, box.put))
    scheduler.start()
    try:
        for box, tokens in zip(boxes, solo):
            events = []
            while not events or not isinstance(events[-1], (Finished, Failed)):
                events.append(box.get(timeout=30))
            assert "".join(e.text for e in events if isinstance(e, Delta)) == chat.processor.decode(tokens)
            assert events[-1].completion_tokens == len(tokens)
        assert scheduler.stats.batched_prefills == 1 and scheduler.stats.prefills == 4
    finally:
        scheduler.close()


def test_a_failure_mid_stream_reaches_the_client_as_an_error_event(chat):
    settings = ServeSettings(model_name=MODEL, default_max_tokens=8)
    with ServerThread(create_app(chat, settings)) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        real_forward = chat.model.forward

        def failing_decode(*args, **kwargs):
            tokens = kwargs["input_ids"] if kwargs.get("input_ids") is not None else kwargs["inputs_embeds"]
            if tokens.shape[1] == 1:  # a decode step, not the prefill
                raise RuntimeError("simulated failure with internals /secret/path")
            return real_forward(*args, **kwargs)

        chat.model.forward = failing_decode
        try:
            stream = client.chat.completions.create(model=MODEL, messages=[user("hi")], stream=True)
            with pytest.raises(openai.APIError) as err:
                list(stream)
        finally:
            del chat.model.forward
        assert err.value.message == "the model failed while answering"
        answer = client.chat.completions.create(model=MODEL, messages=[user("hi")])
        assert answer.usage.completion_tokens == 8


def test_stop_tokens_end_an_answer_with_reason_stop(chat):
    inputs = chat.inputs([chat.conversation("hi")])
    scheduler = Scheduler(chat.model, chat.processor.decode, max_batch=2, max_queue=4)
    scheduler.start()
    try:
        free = DecodeBatch.prefill(chat.model, inputs, [chat.config(max_new_tokens=8)])
        for _ in range(7):
            free.step()
        tokens = free.rows[0].new_tokens
        stop_at = tokens.index(tokens[4])  # the first occurrence of the 5th token ends the answer
        cfg = chat.config(max_new_tokens=8, stop_token_ids=(tokens[4],))
        events = run_jobs(scheduler, [inputs], [cfg])[0]
        assert events[-1].reason == "stop" and events[-1].completion_tokens == stop_at + 1
        text = "".join(e.text for e in events if isinstance(e, Delta))
        assert text == chat.processor.decode(tokens[: stop_at + 1])
    finally:
        scheduler.close()


def test_a_stopped_scheduler_refuses_jobs(chat):
    scheduler = Scheduler(chat.model, chat.processor.decode, max_batch=1, max_queue=2)
    scheduler.start()
    scheduler.close()
    assert not scheduler.alive
    with pytest.raises(RuntimeError):
        scheduler.submit(Job(chat.inputs([chat.conversation("hi")]), chat.config(), lambda e: None))


def test_compaction_drops_dead_columns_and_changes_no_token(chat):
    """Rows join a long-running batch at different times; compacting after every step gives the same tokens."""
    prompts = [chat.inputs([chat.conversation("hi", wav_bytes(1.0, 1))]),
               chat.inputs([chat.conversation("What's that sound?", wav_bytes(2.0, 2))]),
               chat.inputs([chat.conversation("Describe it.")])]  # short: the columns in front of it outnumber it
    lengths = [12, 30, 25]  # the third outlives the second, whose columns then die

    def decode(compact_every_step: bool):
        batch, out, joined, compactions = None, {}, 0, 0
        for step in range(200):
            if joined < 3 and step == [0, 5, 24][joined]:
                part = DecodeBatch.prefill(chat.model, prompts[joined], [chat.config(max_new_tokens=lengths[joined])],
                                           tags=[joined])
                if batch is None:
                    batch = part
                else:
                    batch.merge(part)
                joined += 1
            for r in batch.drop_finished():
                out[r.tag] = r.new_tokens
            if not batch.rows:
                if joined == 3:
                    break
                batch = None
                continue
            if compact_every_step and batch.compact(min_dead=1):
                compactions += 1
                assert bool(batch.key_valid[:, 0].any()), "a dead column was kept"
            batch.step()
        return out, compactions, batch

    plain, _, _ = decode(False)
    compacted, compactions, _ = decode(True)
    assert compactions > 0
    assert compacted == plain
    assert [len(plain[i]) for i in range(3)] == lengths


def test_stop_text_holds_back_only_what_could_become_a_stop():
    s = StopText(("END", "\n\n"))
    assert s.push("hello E") == "hello "
    assert s.push("N") == ""
    assert s.push("D and more") == "" and s.stopped
    assert s.flush() == ""
    s = StopText(("END",))
    assert s.push("EN") == "" and s.push("ough") == "ENough"
    assert s.push(" E") == " " and s.flush() == "E"
    s = StopText(("xyz", "b"))
    assert s.push("aaxy") == "aa" and s.push("zb") == "" and s.stopped  # the earliest stop wins
    assert StopText(()).push("anything") == "anything"
