"""The outer loop on its own terms: selection rules, round slices, policy updates, checkpoints and resume.

`VowelDomain` is a second, deliberately simple domain (reward = share of vowels in the self-edit),
written against the same `Domain` protocol as knowledge incorporation. It proves the outer loop
needs nothing domain-specific, and with the tiny random model it gives varied rewards, so the
policy-update path (keep, SFT, merge, checkpoint, reload) really runs.
"""

import dataclasses
import json
from dataclasses import dataclass

import pytest
import torch

from seal_lm.adapters import merge_adapter, using
from seal_lm.generation import GREEDY, HFGenerator, Prompt, SamplingParams
from seal_lm.inner_loop import Example, InnerLoopSettings, LoraUpdater, TrainJob
from seal_lm.models import ModelSettings, load_model
from seal_lm.domain import RestEmSettings, Scored, Units, sample_completions
from seal_lm.recipes.rest_em import contexts_for_round, kept_indices, run_rest_em
from seal_lm.records import EvalRecord, PolicyUpdateRecord, RolloutRecord, record_types
from seal_lm.runs import RunDir


def test_keep_rules():
    rewards = [0.2, 0.6, 0.4, 0.6, 0.1]
    assert kept_indices(rewards, 0.3, "best-over-baseline") == [1]  # ties go to the first
    assert kept_indices(rewards, 0.3, "positive") == [1, 2, 3]
    assert kept_indices(rewards, 0.3, "top-k", k=2) == [1, 3]
    assert kept_indices(rewards, 0.6, "best-over-baseline") == [] and kept_indices(rewards, 0.6, "positive") == []
    # SEAL's rule (src/EM/build_SFT_dataset.py): the best whatever its value, the first of those tied
    assert kept_indices(rewards, 0.9, "best") == [1] and kept_indices([0.0, 0.0], 0.5, "best") == [0]


def test_each_round_takes_the_next_contexts_and_wraps_around():
    contexts = list(range(5))
    assert contexts_for_round(contexts, 1, 2) == [0, 1]
    assert contexts_for_round(contexts, 2, 2) == [2, 3]
    assert contexts_for_round(contexts, 3, 2) == [4, 0]
    assert contexts_for_round(contexts, 1, 9) == [0, 1, 2, 3, 4]


def test_examples_learn_the_completion_only(tiny):
    updater = LoraUpdater(tiny, InnerLoopSettings(rank=4, alpha=8, epochs=5, learning_rate=1e-2))
    example = Example(Prompt.single_turn("Where is Marrowgate?"), "Marrowgate is in the north.")
    tokens, = updater.tokenize([example], 2048)
    labels = tokens.labels()
    assert all(x == -100 for x in labels[: tokens.n_prompt - 1]) and labels[-1] == -100
    assert labels[tokens.n_prompt - 1 : -1] == tokens.ids[tokens.n_prompt :]
    before = updater.mean_loss([example])
    result, = updater.train([TrainJob([example])])
    with using(tiny.model, result.adapter):
        after = updater.mean_loss([example])
    assert after < before


def test_merging_an_adapter_equals_applying_it(tiny, tiny_model_dir, test_device):
    result, = LoraUpdater(tiny, InnerLoopSettings(rank=4, alpha=8, epochs=3, learning_rate=1e-2)).train(
        [TrainJob(["Orlan Vesk built the Marrowgate Observatory in 1902."])])
    ids = tiny.tokenizer("Orlan Vesk built", return_tensors="pt")["input_ids"].to(tiny.device)
    with torch.no_grad(), using(tiny.model, result.adapter):
        applied = tiny.model(input_ids=ids).logits
    copy = load_model(ModelSettings(name=str(tiny_model_dir), device=test_device, dtype="float32"))
    merge_adapter(copy.model, result.adapter)
    with torch.no_grad():
        merged = copy.model(input_ids=ids).logits
    assert torch.allclose(applied, merged, atol=1e-4)


@dataclass(frozen=True)
class Topic:
    id: str
    title: str


@dataclass
class VowelConfig:
    model: ModelSettings
    rest_em: RestEmSettings
    seed: int = 3


class VowelDomain:
    """Reward: the share of vowels among the letters of a self-edit; baseline: a fixed bar."""

    name = "vowels"
    units = Units("topic", "topics", "self-edit", "self-edits")
    eval_record = EvalRecord
    sampling = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=12)
    baseline = 0.3

    def __init__(self, config: VowelConfig):
        self.config = config
        self.topics = [Topic(f"t{i}", f"topic {i}") for i in range(4)]

    def training_contexts(self):
        return self.topics

    def self_edit_prompt(self, context):
        return Prompt.single_turn(f"Write about {context.title}.")

    def sample_self_edits(self, generator, contexts, n, seed):
        return sample_completions(self, generator, contexts, n, seed), [0] * len(contexts)

    def score(self, model, contexts, completions, repeats, seed):
        return [Scored(self.baseline, [_vowel_share(c) for c in outs], {"seed": seed}) for outs in completions]

    def evaluate(self, model, round_, run, show_progress):
        if any(r.round == round_ for r in run.of(EvalRecord)):
            return
        outs = HFGenerator(model).generate([self.self_edit_prompt(t) for t in self.topics],
                                           dataclasses.replace(GREEDY, max_new_tokens=12))
        score = sum(_vowel_share(o[0]) for o in outs) / len(outs)
        run.append(EvalRecord(round=round_, context_id="all", title="all topics", condition="greedy",
                              accuracy={"vowels": score}, seconds=0.0))

    def summarize(self, records):
        return {"score": {r.round: r.accuracy["vowels"] for r in records if isinstance(r, EvalRecord)}}


def _vowel_share(text: str) -> float:
    letters = [c for c in text.lower() if c.isalpha()]
    return sum(c in "aeiou" for c in letters) / len(letters) if letters else 0.0


_TYPES = record_types(EvalRecord, RolloutRecord, PolicyUpdateRecord)
SETTINGS = RestEmSettings(rounds=2, contexts_per_round=3, samples_per_context=4, reward_repeats=1, keep="positive",
                          contexts_per_batch=2,
                          policy_update=InnerLoopSettings(rank=4, alpha=8, learning_rate=1e-2, epochs=3, batch_size=4))


def _run(tiny_model_dir, path):
    model = ModelSettings(name=str(tiny_model_dir), device="cpu", dtype="float32")
    domain = VowelDomain(VowelConfig(model, SETTINGS))
    summary = run_rest_em(domain, path, show_progress=False)
    return summary, RunDir(path, json.loads((path / "config.json").read_text()), _TYPES)


def _stable(summary):
    """The summary without wall times."""
    summary = json.loads(json.dumps(summary))
    for row in summary["rounds"]:
        row.pop("seconds")
    return summary


def _copy_of_run(path, copy, results):
    """A run directory with `path`'s config and the given records, nothing else."""
    copy.mkdir()
    (copy / "config.json").write_text((path / "config.json").read_text())
    (copy / "results.jsonl").write_text(results)
    return copy


@pytest.fixture(scope="module")
def finished_run(tiny_model_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("vowels")
    summary, run = _run(tiny_model_dir, path)
    return summary, run, path


def test_policy_update_keeps_good_self_edits_trains_on_them_and_saves_a_checkpoint(finished_run):
    summary, run, path = finished_run
    kinds = [r.kind for r in run.records]
    assert kinds.count("rollout") == 6 and kinds.count("sft") == 2 and kinds.count("eval") == 3
    rollouts = run.of(RolloutRecord)
    assert [r.context_id for r in rollouts] == ["t0", "t1", "t2", "t3", "t0", "t1"]
    for r in rollouts:
        assert len(r.completions) == 4 and r.gains == pytest.approx([x - 0.3 for x in r.rewards])
        assert r.kept == [i for i, x in enumerate(r.rewards) if x > 0.3]
    for update in run.of(PolicyUpdateRecord):
        kept = [r for r in rollouts if r.round == update.round]
        assert update.examples == sum(len(r.kept) for r in kept) > 0
        assert update.nll_after < update.nll_before  # the merged checkpoint learned the kept self-edits
        assert (path / update.checkpoint / "model.safetensors").is_file()
        assert (path / update.checkpoint / "tokenizer_config.json").is_file()
    assert [row["round"] for row in summary["rounds"]] == [1, 2]
    assert summary["rounds"][0]["kept"] == sum(bool(r.kept) for r in rollouts[:3])
    assert json.loads((path / "summary.json").read_text())["rounds"][1]["contexts"] == 3


def test_a_run_resumed_after_losing_work_reaches_the_same_summary(finished_run, tiny_model_dir, tmp_path):
    summary, run, path = finished_run
    lines = (path / "results.jsonl").read_text().splitlines(keepends=True)
    # As if killed during round 2's rollouts: round 1 and its checkpoint are kept, the rest is lost.
    cut = next(i for i, r in enumerate(run.records) if isinstance(r, RolloutRecord) and r.round == 2) + 1
    copy = _copy_of_run(path, tmp_path / "resumed", "".join(lines[:cut]) + lines[cut][:7])
    (copy / "policy-round-1").symlink_to(path / "policy-round-1", target_is_directory=True)
    resumed, run2 = _run(tiny_model_dir, copy)
    assert _stable(resumed) == _stable(summary)
    assert len(run2.records) == len(run.records)
    before = _run(tiny_model_dir, copy)[1].records
    assert len(before) == len(run.records)  # a finished run has nothing left to do


def test_a_run_kept_without_its_checkpoints_rebuilds_them(finished_run, tiny_model_dir, tmp_path, caplog):
    """Run directories kept under version control keep their records but not their weights: resuming
    one redoes a finished policy update (seeded) instead of failing to load its checkpoint."""
    from safetensors.torch import load_file

    summary, run, path = finished_run
    lines = (path / "results.jsonl").read_text().splitlines(keepends=True)
    cut = next(i for i, r in enumerate(run.records) if isinstance(r, RolloutRecord) and r.round == 2)
    copy = _copy_of_run(path, tmp_path / "records-only", "".join(lines[:cut]))  # round 1 done, no checkpoint
    with caplog.at_level("WARNING", logger="seal_lm.recipes.rest_em"):
        resumed, run2 = _run(tiny_model_dir, copy)
    assert "policy-round-1 is missing; rebuilding it" in caplog.text
    assert _stable(resumed) == _stable(summary)
    assert [r.kind for r in run2.records] == [r.kind for r in run.records]  # round 1's update recorded once
    rebuilt, original = (load_file(str(p / "policy-round-1" / "model.safetensors")) for p in (copy, path))
    assert rebuilt.keys() == original.keys()
    assert all(torch.equal(rebuilt[k], original[k]) for k in original)
