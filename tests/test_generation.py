from seal_lm.generation import GREEDY, HFGenerator, Prompt, SamplingParams
from seal_lm.models import ModelSettings, load_model

PROMPTS = [Prompt.single_turn("Orlan"), Prompt.single_turn("The observatory of Marrowgate was built in the year"),
           Prompt.single_turn("Who")]


def test_chat_template_used_when_present_and_plain_text_otherwise(tiny, tiny_base_model_dir):
    prompt = Prompt(messages=(("user", "hello"),), text="BASE: hello")
    assert HFGenerator(tiny).render(prompt) == "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
    base = load_model(ModelSettings(name=str(tiny_base_model_dir)))
    assert HFGenerator(base).render(prompt) == "BASE: hello"
    assert HFGenerator(tiny, use_chat_template=False).render(prompt) == "BASE: hello"


def test_a_response_prefix_starts_the_answer_and_is_not_repeated_in_the_completion(tiny):
    prompt = Prompt(messages=(("user", "hello"),), text="BASE: hello", response_prefix='{"a": "')
    assert HFGenerator(tiny).render(prompt).endswith('<|im_start|>assistant\n{"a": "')
    assert HFGenerator(tiny, use_chat_template=False).render(prompt) == 'BASE: hello{"a": "'
    plain = Prompt(messages=(("user", 'hello'),), text="x")
    chat = HFGenerator(tiny).render(plain)
    continued = Prompt(messages=plain.messages, text="x", response_prefix="Sure")
    free = HFGenerator(tiny).generate([continued], SamplingParams(temperature=0.0, max_new_tokens=6))[0][0]
    # The prefixed prompt's completion is what greedy decoding writes after "chat template + Sure".
    assert HFGenerator(tiny).render(continued) == chat + "Sure" and not free.startswith("Sure")


def test_batched_left_padded_greedy_equals_one_by_one(tiny):
    params = SamplingParams(temperature=0.0, max_new_tokens=12)
    batched = HFGenerator(tiny, batch_size=8).generate(PROMPTS, params)
    single = [HFGenerator(tiny, batch_size=1).generate([p], params)[0] for p in PROMPTS]
    assert batched == single
    assert all(len(outs) == 1 and outs[0] for outs in batched)


def test_sampling_returns_n_per_prompt_and_is_seeded(tiny):
    params = SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=8, n=3, seed=7)
    gen = HFGenerator(tiny)
    first, again = gen.generate(PROMPTS, params), gen.generate(PROMPTS, params)
    assert [len(o) for o in first] == [3, 3, 3]
    assert first == again
    assert len({o for outs in first for o in outs}) > 1  # a random tiny model rarely repeats itself


def test_greedy_with_n_repeats_the_single_answer(tiny):
    outs = HFGenerator(tiny).generate(PROMPTS[:1], SamplingParams(temperature=0.0, max_new_tokens=5, n=2))
    assert len(outs[0]) == 2 and outs[0][0] == outs[0][1]


def test_stop_strings_cut_the_completion(tiny):
    gen = HFGenerator(tiny)
    free = gen.generate(PROMPTS[:1], SamplingParams(temperature=0.0, max_new_tokens=20))[0][0]
    assert len(free) > 3
    stop = free[2:4]  # a string the model is known to produce
    cut = gen.generate(PROMPTS[:1], SamplingParams(temperature=0.0, max_new_tokens=20, stop=(stop,)))[0][0]
    assert stop not in cut and free.startswith(cut) and len(cut) < len(free)


def test_the_earliest_stop_string_ends_a_completion_and_can_be_kept():
    from seal_lm.generation import _cut_at_stop

    text = '"basic"], "epochs": 2} and then} more'
    assert _cut_at_stop(text, ("}", "then")) == '"basic"], "epochs": 2'
    assert _cut_at_stop(text, ("then", "}"), include=True) == '"basic"], "epochs": 2}'
    assert _cut_at_stop(text, ("<none>",), include=True) == text


def test_empty_prompt_list(tiny):
    assert HFGenerator(tiny).generate([], GREEDY) == []


def test_prompts_with_different_adapters_share_a_batch(tiny):
    from seal_lm.inner_loop import InnerLoopSettings, LoraUpdater, TrainJob

    settings = InnerLoopSettings(rank=8, alpha=16, epochs=30, learning_rate=3e-2)
    first, second = LoraUpdater(tiny, settings).train([
        TrainJob(["Orlan Vesk built an observatory of copper in Marrowgate."]),
        TrainJob(["The Quillfen loom was woven in green wool by the river."]),
    ])
    params = SamplingParams(temperature=0.0, max_new_tokens=8)
    prompts = PROMPTS[:2] * 3
    choice = [first.adapter, first.adapter, second.adapter, second.adapter, None, None]
    together = HFGenerator(tiny, batch_size=6).generate(prompts, params, choice)
    alone = [HFGenerator(tiny).generate([p], params, a)[0] for p, a in zip(prompts, choice)]
    assert together == alone
    assert together[0] != together[4] or together[2] != together[4]  # the adapters change the answers


def test_a_static_kv_cache_decodes_what_the_dynamic_one_does(tiny, tiny_model_dir):
    """Batched, left-padded, with per-row adapters: the preallocated cache changes nothing but memory layout."""
    from seal_lm.inner_loop import InnerLoopSettings, LoraUpdater, TrainJob

    static = load_model(ModelSettings(name=str(tiny_model_dir), device=str(tiny.device), dtype="float32",
                                      kv_cache="static"))
    assert static.model.generation_config.cache_implementation == "static"
    adapter, = LoraUpdater(tiny, InnerLoopSettings(rank=8, alpha=16, epochs=20, learning_rate=3e-2)).train(
        [TrainJob(["Orlan Vesk built an observatory of copper in Marrowgate."])])
    params = SamplingParams(temperature=0.0, max_new_tokens=8)
    choice = [adapter.adapter, None, adapter.adapter]
    expected = HFGenerator(tiny, batch_size=3).generate(PROMPTS, params, choice)
    assert HFGenerator(static, batch_size=3).generate(PROMPTS, params, choice) == expected
