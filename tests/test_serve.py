"""`seal serve` end to end: a real uvicorn server on 127.0.0.1 serving the tiny model, checked
against direct HFGenerator calls (the server is idle whenever a test calls the model directly)."""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from seal_lm.adapters import load_adapter, save_adapter
from seal_lm.errors import SealError
from seal_lm.generation import HFGenerator, Prompt, SamplingParams
from seal_lm.inner_loop import InnerLoopSettings, LoraUpdater, TrainJob
from seal_lm.openai_client import OpenAIGenerator
from seal_lm.serve import Batcher, create_app, running

GREEDY_8 = SamplingParams(temperature=0.0, max_new_tokens=8)


def raw(text: str, prefix: str = "") -> Prompt:
    """A prompt that /v1/completions sees as plain text."""
    return Prompt(messages=(("user", text),), text=text, response_prefix=prefix)


@pytest.fixture(scope="module")
def adapter_dir(tiny, tmp_path_factory):
    settings = InnerLoopSettings(rank=4, alpha=8, epochs=20, learning_rate=3e-2)
    result, = LoraUpdater(tiny, settings).train([TrainJob(["Orlan Vesk built an observatory of copper in Marrowgate."])])
    return save_adapter(tiny.model, result.adapter, tmp_path_factory.mktemp("adapter") / "orlan")


@pytest.fixture(scope="module")
def server(tiny, adapter_dir, tmp_path_factory):
    app = create_app(tiny, "tiny", adapters={"orlan": str(adapter_dir)}, batch_wait_ms=20,
                     adapter_root=tmp_path_factory.getbasetemp())
    with running(app) as url:
        yield url, app


def test_models_lists_the_base_model_and_its_adapters(server, adapter_dir):
    url, _ = server
    answer = httpx.get(f"{url}/v1/models")
    assert answer.status_code == 200
    body = answer.json()
    assert body["object"] == "list"
    assert [(m["id"], m["object"], m["parent"]) for m in body["data"]] == [("tiny", "model", None),
                                                                          ("orlan", "model", "tiny")]
    assert body["data"][1]["root"] == str(adapter_dir)


def test_greedy_completion_equals_a_direct_hfgenerator_call(server, tiny):
    url, _ = server
    texts = ["Orlan Vesk built", "The observatory of Marrowgate was built in the year"]
    answer = httpx.post(f"{url}/v1/completions", json={"model": "tiny", "prompt": texts, "max_tokens": 8,
                                                       "temperature": 0}).json()
    expected = HFGenerator(tiny, use_chat_template=False).generate([raw(t) for t in texts], GREEDY_8)
    assert answer["object"] == "text_completion" and answer["id"].startswith("cmpl-") and answer["model"] == "tiny"
    assert [c["index"] for c in answer["choices"]] == [0, 1]
    assert [[c["text"]] for c in answer["choices"]] == expected
    assert all(c["finish_reason"] in ("stop", "length") for c in answer["choices"])
    usage = answer["usage"]
    assert usage["prompt_tokens"] == sum(len(tiny.tokenizer(t)["input_ids"]) for t in texts)
    assert 0 < usage["completion_tokens"] <= 16
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_chat_completion_uses_the_chat_template(server, tiny):
    url, _ = server
    question = "Who built the observatory?"
    expected = HFGenerator(tiny).generate([Prompt.single_turn(question)], GREEDY_8)[0][0]
    for content in (question, [{"type": "text", "text": question}]):
        answer = httpx.post(f"{url}/v1/chat/completions", json={
            "model": "tiny", "messages": [{"role": "user", "content": content}], "max_tokens": 8, "temperature": 0,
        }).json()
        assert answer["object"] == "chat.completion" and answer["id"].startswith("chatcmpl-")
        choice, = answer["choices"]
        assert choice["message"] == {"role": "assistant", "content": expected}
        assert answer["usage"]["prompt_tokens"] == len(tiny.tokenizer(HFGenerator(tiny).render(
            Prompt.single_turn(question)), add_special_tokens=False)["input_ids"])


def test_seeded_sampling_returns_n_choices_reproducibly(server, tiny):
    url, _ = server
    request = {"model": "tiny", "prompt": "Orlan", "max_tokens": 8, "temperature": 1.0, "n": 3, "seed": 7}
    first = httpx.post(f"{url}/v1/completions", json=request).json()
    again = httpx.post(f"{url}/v1/completions", json=request).json()
    texts = [c["text"] for c in first["choices"]]
    assert [c["index"] for c in first["choices"]] == [0, 1, 2]
    assert texts == [c["text"] for c in again["choices"]]
    assert len(set(texts)) > 1  # a random tiny model rarely repeats itself
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=8, n=3, seed=7)
    assert HFGenerator(tiny, use_chat_template=False).generate([raw("Orlan")], params) == [texts]


def test_adapters_load_answer_like_hfgenerator_and_unload(server, tiny, adapter_dir):
    url, _ = server
    load = httpx.post(f"{url}/v1/load_lora_adapter", json={"lora_name": "copy", "lora_path": str(adapter_dir)})
    assert load.status_code == 200 and "copy" in load.text
    assert "copy" in [m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]]
    again = httpx.post(f"{url}/v1/load_lora_adapter", json={"lora_name": "copy", "lora_path": str(adapter_dir)})
    assert again.status_code == 400 and "already loaded" in again.json()["error"]["message"]

    request = {"prompt": "Orlan Vesk", "max_tokens": 8, "temperature": 0}
    adapted = httpx.post(f"{url}/v1/completions", json={**request, "model": "copy"}).json()["choices"][0]["text"]
    base = httpx.post(f"{url}/v1/completions", json={**request, "model": "tiny"}).json()["choices"][0]["text"]
    direct = HFGenerator(tiny, use_chat_template=False).generate([raw("Orlan Vesk")], GREEDY_8,
                                                                 load_adapter(adapter_dir))
    assert [[adapted]] == direct and adapted != base

    assert httpx.post(f"{url}/v1/unload_lora_adapter", json={"lora_name": "copy"}).status_code == 200
    gone = httpx.post(f"{url}/v1/completions", json={**request, "model": "copy"})
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "model_not_found" and "'copy'" in gone.json()["error"]["message"]
    assert httpx.post(f"{url}/v1/unload_lora_adapter", json={"lora_name": "copy"}).status_code == 404


def test_adapters_that_cannot_be_read_are_refused(server, tmp_path):
    url, _ = server
    answer = httpx.post(f"{url}/v1/load_lora_adapter", json={"lora_name": "x", "lora_path": str(tmp_path)})
    assert answer.status_code == 400 and "not a PEFT LoRA adapter" in answer.json()["error"]["message"]
    clash = httpx.post(f"{url}/v1/load_lora_adapter", json={"lora_name": "tiny", "lora_path": str(tmp_path)})
    assert clash.status_code == 400 and "base model" in clash.json()["error"]["message"]


@pytest.mark.parametrize(("body", "words"), [
    ({"model": "tiny", "prompt": "x", "temperature": 5}, "temperature"),
    ({"model": "tiny"}, "prompt"),
    ({"model": "tiny", "prompt": "x", "stream": True, "temperature": -1}, "temperature"),
    ({"model": "tiny", "prompt": []}, "empty"),
    ({"model": "tiny", "prompt": "x", "stop": [""]}, "stop"),
    ({"model": "tiny", "prompt": "x", "max_tokens": 5000}, "context"),
    ({"model": "tiny", "prompt": [1, 2]}, "str, list[str]"),  # token ids are not supported
    ("{not json", "JSON"),
])
def test_malformed_requests_get_a_one_line_400(server, body, words):
    url, _ = server
    if isinstance(body, str):
        answer = httpx.post(f"{url}/v1/completions", content=body, headers={"content-type": "application/json"})
    else:
        answer = httpx.post(f"{url}/v1/completions", json=body)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error" and words in error["message"] and "\n" not in error["message"]


def test_an_api_key_is_required_when_set(tiny):
    with running(create_app(tiny, "tiny", api_key="sekret")) as url:
        missing = httpx.get(f"{url}/v1/models")
        wrong = httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer nope"})
        assert missing.status_code == wrong.status_code == 401
        assert missing.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer sekret"}).status_code == 200
        with OpenAIGenerator(url, "tiny", api_key="sekret") as client:
            assert client.generate([Prompt.single_turn("Orlan")], GREEDY_8) == \
                HFGenerator(tiny).generate([Prompt.single_turn("Orlan")], GREEDY_8)
        with OpenAIGenerator(url, "tiny") as client, pytest.raises(SealError, match="401"):
            client.generate([Prompt.single_turn("Orlan")], GREEDY_8)


def test_concurrent_requests_are_batched_and_equal_one_by_one_results(server, tiny, adapter_dir):
    url, app = server
    stats = app.state.batcher.stats
    calls_before = stats.generate_calls
    prompts = [Prompt.single_turn(f"Question {i}: who built observatory number {i}?") for i in range(50)]
    base, orlan = OpenAIGenerator(url, "tiny", concurrency=25), OpenAIGenerator(url, "orlan", concurrency=25)
    with base, orlan, ThreadPoolExecutor(2) as pool:  # base-model and adapter requests arrive together
        futures = [pool.submit(base.generate, prompts[:25], GREEDY_8), pool.submit(orlan.generate, prompts[25:], GREEDY_8)]
        served = futures[0].result() + futures[1].result()
    adapter = load_adapter(adapter_dir)
    one_by_one = [HFGenerator(tiny, batch_size=1).generate([p], GREEDY_8, adapter if i >= 25 else None)[0]
                  for i, p in enumerate(prompts)]
    assert served == one_by_one
    assert stats.generate_calls - calls_before < 50  # fewer model calls than requests: they were batched


def test_the_client_reports_errors_in_one_line(server, tiny):
    url, _ = server
    with OpenAIGenerator(url + "/v1/", "missing") as client, pytest.raises(SealError, match=r"404.*'missing'"):
        client.generate([Prompt.single_turn("Orlan")], GREEDY_8)
    with OpenAIGenerator(url, "tiny") as client:
        with pytest.raises(SealError, match="by model name"):  # refused before the adapter is looked at
            client.generate([Prompt.single_turn("Orlan")], GREEDY_8, adapters=[object()])
        with pytest.raises(SealError, match="use_chat=False"):
            client.generate([raw("Orlan", prefix='{"a": ')], GREEDY_8)
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()  # nothing listens there now
    with (OpenAIGenerator(f"http://127.0.0.1:{port}", "tiny", retries=2, backoff_s=0.01) as client,
          pytest.raises(SealError, match="after 3 attempts")):
        client.generate([Prompt.single_turn("Orlan")], GREEDY_8)


def test_the_completions_client_sends_the_response_prefix(server, tiny):
    url, _ = server
    prompt = raw("Orlan Vesk", prefix=" built")
    with OpenAIGenerator(url, "tiny", use_chat=False) as client:
        assert client.generate([prompt], GREEDY_8) == HFGenerator(tiny, use_chat_template=False).generate(
            [prompt], GREEDY_8)


def test_a_request_that_went_away_is_dropped_and_the_worker_goes_on(tiny):
    batcher = Batcher(tiny, batch_wait_ms=50)
    try:
        gone = batcher.submit([raw("Orlan")], GREEDY_8)
        assert gone.cancel()  # as asyncio does when the client disconnects while the job waits
        kept = batcher.submit([raw("Orlan")], GREEDY_8)
        assert kept.result(timeout=60).completions == HFGenerator(tiny, use_chat_template=False).generate(
            [raw("Orlan")], GREEDY_8)
        assert batcher.stats.prompts == 1  # the cancelled job was never generated
    finally:
        batcher.close()
    assert batcher.submit([raw("Orlan")], GREEDY_8).exception().status == 503


# ---- streaming, with the openai package itself; runtime adapters behind a switch and a root

def _openai(url: str):
    from openai import OpenAI

    return OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)


@pytest.mark.parametrize("model", ["tiny", "orlan"])
def test_the_openai_client_streams_what_it_gets_without_streaming(server, model):
    url, _ = server
    client = _openai(url)
    whole = client.completions.create(model=model, prompt="Orlan Vesk built", max_tokens=12, temperature=0)
    chunks = list(client.completions.create(model=model, prompt="Orlan Vesk built", max_tokens=12, temperature=0,
                                            stream=True))
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    messages = [{"role": "user", "content": "Who built the observatory?"}]
    chat = client.chat.completions.create(model=model, messages=messages, max_tokens=12, temperature=0)
    pieces = list(client.chat.completions.create(model=model, messages=messages, max_tokens=12, temperature=0,
                                                 stream=True))
    assert "".join(p.choices[0].delta.content or "" for p in pieces) == chat.choices[0].message.content
    assert pieces[0].object == "chat.completion.chunk" and pieces[0].choices[0].delta.role == "assistant"


def test_a_streamed_stop_string_is_never_sent(server):
    url, _ = server
    client = _openai(url)
    whole = client.completions.create(model="tiny", prompt="Orlan", max_tokens=30, temperature=0)
    text = whole.choices[0].text
    stop = text[len(text) // 2 : len(text) // 2 + 2] or "x"
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="tiny", prompt="Orlan", max_tokens=30, temperature=0, stop=[stop], stream=True))
    assert streamed == text[: text.find(stop)] if stop in text else streamed == text


def test_runtime_adapters_are_off_unless_allowed_and_only_from_under_the_root(tiny, adapter_dir, tmp_path):
    with running(create_app(tiny, "tiny")) as url:
        answer = httpx.post(f"{url}/v1/load_lora_adapter", json={"lora_name": "x", "lora_path": str(adapter_dir)})
        assert answer.status_code == 403 and "--adapter_root" in answer.json()["error"]["message"]
        assert httpx.get(f"{url}/v1/models").status_code == 200  # still serving
    root = tmp_path / "root"
    (root / "inside").mkdir(parents=True)
    (root / "link").symlink_to(adapter_dir, target_is_directory=True)
    with running(create_app(tiny, "tiny", adapter_root=root)) as url:
        for path in (str(adapter_dir), str(root / "inside" / ".." / ".." / adapter_dir.name), str(root / "link")):
            answer = httpx.post(f"{url}/v1/load_lora_adapter", json={"lora_name": "x", "lora_path": path})
            assert answer.status_code == 403 and "outside the adapter root" in answer.json()["error"]["message"]
        inside = root / "inside" / "orlan"
        save_adapter(tiny.model, load_adapter(adapter_dir), inside)
        assert httpx.post(f"{url}/v1/load_lora_adapter", json={"lora_name": "x", "lora_path": str(inside)}
                          ).status_code == 200


def test_serve_options_are_checked_and_the_key_can_come_from_a_file(tmp_path, capsys):
    from seal_lm.cli import ServeConfig, main

    assert main(["serve", "--allow_runtime_adapters", "true"]) == 2
    assert "allow_runtime_adapters and adapter_root go together" in capsys.readouterr().err
    (tmp_path / "key").write_text("sekret\n")
    assert ServeConfig(api_key_file=str(tmp_path / "key")).key() == "sekret"
    with pytest.raises(SealError, match="cannot read"):
        ServeConfig(api_key_file=str(tmp_path / "nope")).key()
