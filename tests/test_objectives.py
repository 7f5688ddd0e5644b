"""The objectives against hand-computed values, and how they share one step's passes."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from protjepa.attention import AttentionLayout
from protjepa.batch import Batch, gather_positions
from protjepa.build import build_model
from protjepa.encoders.base import Encoder, EncoderOutput
from protjepa.objectives.base import ObjectiveError
from protjepa.objectives.base import LatentScore, latent_scores
from protjepa.objectives.jepa import PredictorConfig, TransformerPredictor, latent_loss
from protjepa.objectives.mlm import unigram_entropy
from protjepa.objectives.sigreg import SIGReg, SIGRegConfig
from protjepa.objectives.vicreg import VICReg, VICRegConfig
from protjepa.recipe import RecipeError
from toy_model import ToyEncoder, make_batch, recipe_of, toy_batch


def model_of(*objectives: dict, encoder: Encoder | None = None):
    return build_model(recipe_of(*objectives), encoder=encoder or ToyEncoder())


# --------------------------------------------------------------------------- mlm


class LogitsEncoder(Encoder):
    """Hidden states are a parameter [2, 4, 4] and the LM head is the identity: logits by hand."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.embed_dim, self.num_layers = logits.shape[-1], 1
        self.hidden = nn.Parameter(logits)

    def forward(self, tokens, padding_mask=None, *, layout=None, layers=(), stop_at=None):
        return EncoderOutput(self.hidden, {d: self.hidden for d in layers})

    def lm_head(self, hidden):
        return hidden


def two_by_four_batch() -> Batch:
    tokens = torch.tensor([[0, 2, 1, 3], [0, 3, 0, 1]])
    inputs = torch.tensor([[0, 3, 1, 3], [0, 3, 3, 1]])  # the selected positions corrupted: labels are tokens
    return Batch(
        tokens=tokens,
        inputs=inputs,
        padding_mask=torch.zeros(2, 4, dtype=torch.bool),
        masked_index=torch.tensor([1, 6]),  # row 0 position 1 (label 2), row 1 position 2 (label 0)
        residue_index=torch.arange(8),
        residue_sequence=torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]),
        num_sequences=2,
    )


def test_mlm_is_hand_computed_cross_entropy_at_selected_positions_only():
    logits = torch.zeros(2, 4, 4)
    logits[1, 2, 0] = math.log(3)  # label 0: -log(3 / (3 + 3)) = log 2
    # position (0, 1) is all zeros with label 2: -log(1/4) = log 4
    encoder = LogitsEncoder(logits.clone())
    model = model_of({"name": "mlm"}, encoder=encoder)
    out = model(two_by_four_batch())
    assert out.loss.item() == pytest.approx((math.log(4) + math.log(2)) / 2, abs=1e-6)
    assert out.metrics["mlm/accuracy"].item() == 0.5  # argmax of zeros is 0, not 2; log 3 at label 0
    assert out.metrics["mlm/perplexity"].item() == pytest.approx(2**1.5, rel=1e-6)
    assert not out.metrics["mlm/accuracy"].requires_grad and not out.metrics["mlm/perplexity"].requires_grad

    out.loss.backward()
    unselected = torch.ones(8, dtype=torch.bool)
    unselected[[1, 6]] = False
    assert encoder.hidden.grad.flatten(0, 1)[unselected].abs().max() == 0

    scrambled = torch.randn(2, 4, 4) * 10
    scrambled.view(8, 4)[[1, 6]] = logits.view(8, 4)[[1, 6]]
    with torch.no_grad():
        encoder.hidden.copy_(scrambled)
    assert model(two_by_four_batch()).loss.item() == out.loss.item()


def test_mlm_needs_an_lm_head():
    class Headless(ToyEncoder):
        lm_head = Encoder.lm_head

    with pytest.raises(ObjectiveError, match="objectives: mlm: Headless has no LM head"):
        model_of({"name": "mlm"}, encoder=Headless())


# --------------------------------------------------------------------------- latent losses


def test_latent_losses_on_known_vectors():
    pred = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    target = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert latent_loss(pred, target, "cosine").item() == pytest.approx(0.5)  # cos = 1 and 0
    assert latent_loss(pred, target, "mse").item() == pytest.approx((4 + 0 + 1 + 1) / 4)
    # smooth L1, beta 1: |2| -> 1.5, 0 -> 0, |1| -> 0.5 twice
    assert latent_loss(pred, target, "smooth_l1").item() == pytest.approx((1.5 + 0 + 0.5 + 0.5) / 4)


def test_latent_scores_set_the_prediction_against_the_mean_target():
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # mean (2/3, 2/3)
    # cos((1, 1), t) for each row: 1/sqrt(2), 1/sqrt(2), 1
    of_mean = (2 / math.sqrt(2) + 1) / 3
    mean = latent_scores(target.mean(0).expand(3, 2), target)
    assert mean["cosine"].item() == pytest.approx(of_mean) and mean["cosine_of_mean"].item() == pytest.approx(of_mean)
    assert mean["lift"].item() == pytest.approx(0, abs=1e-7) and mean["r2"].item() == pytest.approx(0, abs=1e-7)
    itself = latent_scores(target, target)
    assert itself["cosine"].item() == pytest.approx(1) and itself["r2"].item() == 1
    assert itself["lift"].item() == pytest.approx(1 - of_mean)
    # rows shuffled: the sum of squared errors (2 + 1 + 1) exceeds the spread about the mean (4/3)
    shuffled = latent_scores(target[[1, 2, 0]], target)
    assert shuffled["r2"].item() == pytest.approx(1 - 4 / (4 / 3)) and shuffled["r2"].item() < 0
    assert shuffled["cosine"].item() == pytest.approx((0 + 1 / math.sqrt(2) + 1 / math.sqrt(2)) / 3)
    assert "r2" not in latent_scores(target, target, r2=False)  # for a loss that leaves the scale free


def test_jepa_logs_its_latent_scores_and_names_its_score():
    batch = toy_batch()
    for loss, score in (("cosine", "lift"), ("mse", "r2")):
        model = model_of({"name": "jepa", "loss": loss})
        assert model.latent_scores() == {"jepa": LatentScore(score, 0.0)}
        out = model(batch)
        assert out.metrics["jepa/lift"].item() == pytest.approx(
            out.metrics["jepa/cosine"].item() - out.metrics["jepa/cosine_of_mean"].item(), abs=1e-6)
        assert ("jepa/r2" in out.metrics) == (loss == "mse")
    assert model_of({"name": "jepa", "loss": "mse", "score": "lift"}).latent_scores() == {"jepa": LatentScore("lift")}
    assert model_of({"name": "mlm"}).latent_scores() == {}


def test_unigram_entropy_is_the_best_constant_predictions_loss():
    labels = torch.tensor([4, 4, 5, 6])  # frequencies 1/2, 1/4, 1/4
    expected = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    assert unigram_entropy(labels, 33).item() == pytest.approx(expected, rel=1e-6)
    constant = torch.full((33,), -math.inf)  # no mass on residues that never occur
    constant[[4, 5, 6]] = torch.tensor([0.5, 0.25, 0.25]).log()  # logits of those frequencies
    assert F.cross_entropy(constant.expand(4, 33), labels).item() == pytest.approx(expected, rel=1e-6)


def test_jepa_masked_cosine_with_layernorm_matches_by_hand():
    batch = toy_batch()
    model = model_of({"name": "jepa"})
    jepa, encoder = model.objectives[0], model.encoder
    out = model(batch)

    with torch.no_grad():
        student = encoder(batch.inputs, layers=[4]).layers[4]
        target = encoder(batch.tokens).last
        pred = jepa.predictor.mlp(gather_positions(student, batch.masked_index))
        pred = F.layer_norm(pred, (8,))
        goal = F.layer_norm(gather_positions(target, batch.masked_index), (8,))
    cos = (pred * goal).sum(-1) / (pred.norm(dim=-1) * goal.norm(dim=-1))
    assert out.loss.item() == pytest.approx((1 - cos).mean().item(), abs=1e-6)
    assert out.metrics["jepa/cosine"].item() == pytest.approx(cos.mean().item(), abs=1e-6)
    assert out.metrics["jepa/target_std"].item() == pytest.approx(goal.std(0, correction=0).mean().item(), abs=1e-6)
    assert jepa.predictor.mlp.w1.weight.shape == (round(8 / 3 * 8), 8)  # SwiGLU hidden = 8/3 x width
    assert all(m.bias is None for m in jepa.predictor.modules() if isinstance(m, nn.Linear))


def test_jepa_all_positions_mse_without_normalisation_matches_by_hand():
    batch = toy_batch()
    model = model_of({"name": "jepa", "positions": "all", "loss": "mse", "normalize": False})
    jepa, encoder = model.objectives[0], model.encoder
    out = model(batch)
    with torch.no_grad():
        pred = jepa.predictor.mlp(gather_positions(encoder(batch.inputs).last, batch.residue_index))
        target = gather_positions(encoder(batch.tokens).last, batch.residue_index)
    assert len(batch.residue_index) == 21
    assert out.loss.item() == pytest.approx(((pred - target) ** 2).mean().item(), abs=1e-6)


def test_jepa_publishes_predictions_and_targets_under_its_id():
    batch = toy_batch()
    model = model_of({"name": "jepa", "id": "mid", "target": {"layer": "half"}})
    ctx = model.context(batch)
    model.objectives[0](ctx)
    assert set(ctx.shared) == {"mid.pred", "mid.target"}
    assert ctx.shared["mid.pred"].shape == (6, 8)  # 6 selected positions, before normalisation
    assert type(model.objectives[0]).publishes(model.objectives[0].config, "mid") == {"mid.pred", "mid.target"}


# --------------------------------------------------------------------------- stop-gradient, shared passes


def encoder_grads(encoder: Encoder) -> list[torch.Tensor]:
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in encoder.parameters()]


def test_no_gradient_reaches_the_target():
    batch = toy_batch()
    model = model_of({"name": "jepa"})
    jepa, encoder = model.objectives[0], model.encoder
    ctx = model.context(batch)
    out = jepa(ctx)
    target = ctx.shared["jepa.target"]
    assert not target.requires_grad and target.grad_fn is None
    out.loss.backward()
    grads = encoder_grads(encoder)

    def student_path_grads(target_hidden):
        encoder.zero_grad()
        jepa.zero_grad()
        student = encoder(batch.inputs, layers=[4]).layers[4]
        pred = F.layer_norm(jepa.predictor.mlp(gather_positions(student, batch.masked_index)), (8,))
        goal = F.layer_norm(gather_positions(target_hidden, batch.masked_index), (8,))
        latent_loss(pred, goal, "cosine").backward()
        return encoder_grads(encoder)

    with torch.no_grad():
        constant_target = encoder(batch.tokens).last
    for got, want in zip(grads, student_path_grads(constant_target)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-7)
    # Had the target carried a gradient, the encoder's gradient would differ:
    leaky = student_path_grads(encoder(batch.tokens).last)
    assert any((g - w).abs().max() > 1e-4 for g, w in zip(grads, leaky))


def test_one_student_and_one_target_forward_per_step():
    batch = toy_batch()
    model = model_of(
        {"name": "mlm"},
        {"name": "jepa", "weight": 0.45},
        {"name": "jepa", "id": "jepa_mid", "target": {"layer": 2}},
        {"name": "vicreg"},
        {"name": "sigreg", "input": "jepa_mid.pred"},
    )
    model(batch).loss.backward()
    calls = model.encoder.calls
    assert len(calls) == 2
    student, target = calls if calls[0]["grad"] else calls[::-1]
    assert student["tokens"] is batch.inputs and student["stop_at"] is None
    assert target["tokens"] is batch.tokens and target["stop_at"] == 4 and not target["grad"]


def test_half_depth_target_stops_early():
    batch = toy_batch()
    model = model_of({"name": "mlm"}, {"name": "jepa", "target": {"layer": "half"}})
    model(batch)
    stops = sorted((c["stop_at"] is None, c["stop_at"]) for c in model.encoder.calls)
    assert stops == [(False, 2), (True, None)]  # target stops after block 2 of 4; the student runs all


def test_student_layer_feeds_the_predictor():
    batch = toy_batch()
    model = model_of({"name": "jepa", "student_layer": 1, "normalize": False, "loss": "mse"})
    out = model(batch)
    jepa, encoder = model.objectives[0], model.encoder
    with torch.no_grad():
        pred = jepa.predictor.mlp(gather_positions(encoder(batch.inputs, layers=[1]).layers[1], batch.masked_index))
        target = gather_positions(encoder(batch.tokens).last, batch.masked_index)
    assert out.loss.item() == pytest.approx(F.mse_loss(pred, target).item(), abs=1e-6)


def test_layer_outside_the_encoder_names_the_field():
    with pytest.raises(ObjectiveError, match=r"objectives: jepa\.target\.layer: layer 9 is not 'last', 'half' or a depth in 0\.\.4"):
        model_of({"name": "jepa", "target": {"layer": 9}})


# --------------------------------------------------------------------------- transformer predictor


def transformer_predictor() -> TransformerPredictor:
    return TransformerPredictor(8, PredictorConfig(kind="transformer", width=8, heads=2, layers=2))


def predict(predictor, hidden, batch: Batch, index):
    return predictor(hidden, index, batch, AttentionLayout.from_batch(batch))


def test_transformer_predictor_ignores_padding_and_hidden_states_under_mask_tokens():
    batch = toy_batch()  # rows of 8, 8 and 5 residues: row 2 has padding
    predictor = transformer_predictor()
    hidden = torch.randn(3, 10, 8)
    out = predict(predictor, hidden, batch, batch.residue_index)
    assert out.shape == (21, 8)

    changed = hidden.clone()
    changed[2, 7:] = 100.0  # padding of row 2
    changed.view(30, 8)[batch.masked_index] = -100.0  # replaced by the mask token anyway
    torch.testing.assert_close(predict(predictor, changed, batch, batch.residue_index), out)

    changed[0, 3] += 1.0  # a visible residue: attention carries it to the others
    moved = (predict(predictor, changed, batch, batch.residue_index) - out).abs().sum(-1)
    assert (moved[:8] > 0).all() and (moved[8:] == 0).all()


def test_transformer_predictor_keeps_packed_sequences_apart():
    batch = make_batch(["MKTAYIAKGL"], [[1, 6]], length=12)
    # Two sequences packed in one row: <cls> MKT <eos> | <cls> AYIAK <eos> ... (ids are irrelevant here)
    segments = torch.tensor([[1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 0]])
    positions = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 0]])
    packed = replace(batch, segment_ids=segments, positions=positions)
    predictor = transformer_predictor()
    hidden = torch.randn(1, 12, 8)
    first = torch.arange(5)
    out = predict(predictor, hidden, packed, first)
    changed = hidden.clone()
    changed[0, 5:11] = torch.randn(6, 8)
    torch.testing.assert_close(predict(predictor, changed, packed, first), out)


def test_transformer_predictor_trains_end_to_end():
    model = model_of({"name": "jepa", "predictor": {"kind": "transformer", "width": 4, "heads": 2, "layers": 1}})
    model(toy_batch()).loss.backward()
    assert model.objectives[0].predictor.mask_token.grad.abs().sum() > 0


# --------------------------------------------------------------------------- vicreg


def test_vicreg_terms_on_a_known_matrix():
    x = torch.tensor([[0.5, 0.5], [0.0, 0.5], [-0.5, -1.0]])
    # column means are 0; unbiased variances 0.5 / 2 = 0.25 and 1.5 / 2 = 0.75;
    # covariance (0.25 + 0 + 0.5) / 2 = 0.375
    variance = ((1 - math.sqrt(0.25 + 1e-4)) + (1 - math.sqrt(0.75 + 1e-4))) / 2
    covariance = 2 * 0.375**2 / 2
    vicreg = VICReg(VICRegConfig(), ToyEncoder(), "vicreg")
    out = vicreg.regularize(x)
    assert out.metrics["variance"].item() == pytest.approx(variance, rel=1e-6)
    assert out.metrics["covariance"].item() == pytest.approx(covariance, rel=1e-6)
    assert out.metrics["std"].item() == pytest.approx((math.sqrt(0.2501) + math.sqrt(0.7501)) / 2, rel=1e-6)
    assert out.loss.item() == pytest.approx(25 * variance + covariance, rel=1e-6)


def test_vicreg_on_wide_spread_uncorrelated_rows_is_zero():
    x = torch.tensor([[2.0, 0.0], [-2.0, 0.0], [0.0, 2.0], [0.0, -2.0]])  # std > 1, covariance 0
    assert VICReg(VICRegConfig(), ToyEncoder(), "vicreg").regularize(x).loss.item() == 0


def test_regularizers_read_student_features():
    model = model_of({"name": "vicreg", "input": "student.pooled"}, {"name": "sigreg", "input": "student.residues"})
    out = model(toy_batch())
    assert out.loss.requires_grad and len(model.encoder.calls) == 1


# --------------------------------------------------------------------------- sigreg


def sigreg(**options) -> SIGReg:
    return SIGReg(SIGRegConfig(**options), ToyEncoder(), "sigreg")


def test_sigreg_is_about_its_null_value_on_gaussian_rows_and_large_when_collapsed():
    # Under N(0, 1), E[N |ecf(t) - phi(t)|^2] = 1 - exp(-t^2), so the statistic is about
    # integral_{-3}^{3} (1 - exp(-t^2)) exp(-t^2 / 2) dt = 1.059 whatever N is.
    reg = sigreg(scale="samples")
    gaussian = reg.regularize(torch.randn(2000, 64)).loss.item()
    assert gaussian == pytest.approx(1.059, abs=0.35)  # the spread over seeds is about 0.09
    assert reg.regularize(2 * torch.randn(2000, 64)).loss.item() > 50  # N(0, 4) is not N(0, 1)
    assert reg.regularize(torch.full((2000, 64), 0.3)).loss.item() > 500  # collapsed


def test_sigreg_matches_a_direct_evaluation_of_the_formula():
    reg = sigreg(num_directions=4, scale="samples")
    x = torch.randn(5, 3)
    directions = reg.directions(3, torch.device("cpu")).double().numpy()
    got = reg.regularize(x).loss.item()
    got_mean = sigreg(num_directions=4, scale="mean").regularize(x).loss.item()  # same step, same directions

    proj = x.double().numpy() @ directions  # [5, 4]
    t = np.linspace(-3, 3, 33)  # the whole symmetric interval, by the plain trapezoid rule
    ecf = np.exp(1j * proj[:, :, None] * t).mean(0)  # [4, 33]
    integrand = np.abs(ecf - np.exp(-(t**2) / 2)) ** 2 * np.exp(-(t**2) / 2)
    integral = ((integrand[:, 1:] + integrand[:, :-1]) / 2 * np.diff(t)).sum(-1)
    assert got == pytest.approx((5 * integral).mean(), rel=1e-5)
    assert got_mean == pytest.approx(integral.mean(), rel=1e-5)  # scale: mean drops the factor N
    assert np.allclose(np.linalg.norm(directions, axis=0), 1)


def test_sigreg_mean_scale_does_not_grow_with_the_batch():
    collapsed_small = sigreg(scale="mean").regularize(torch.full((100, 64), 0.3)).loss.item()
    collapsed_large = sigreg(scale="mean").regularize(torch.full((4000, 64), 0.3)).loss.item()
    assert collapsed_small == pytest.approx(collapsed_large, rel=1e-4)
    assert 0.05 < collapsed_small < 2  # on the scale of an MLM loss, not hundreds
    assert sigreg(scale="mean").regularize(torch.randn(4000, 64)).loss.item() < 0.01 * collapsed_small


def spread_from_collapse(scale: str, steps: int = 200, rows: int = 256, dim: int = 16) -> tuple[float, float, float]:
    """Rows that start collapsed (per-dimension std 0.02) trained on SIGReg (weight 1) plus a
    competing loss of MLM's size on the same parameters: ln(33) x the mean squared distance to
    collapsed targets, the pull a collapsed teacher exerts. -> (std of the rows at the end,
    the N-scaled statistic on them, the same statistic on N(0, 1) rows)."""
    g = torch.Generator().manual_seed(0)
    inputs = torch.randn(rows, dim, generator=g)
    targets = 0.02 * torch.randn(rows, dim, generator=g)
    projection = torch.nn.Linear(dim, dim, bias=False)
    with torch.no_grad():
        projection.weight.copy_(0.02 * torch.randn(dim, dim, generator=g) / dim**0.5)
    reg = sigreg(scale=scale, num_directions=64)
    optimizer = torch.optim.Adam(projection.parameters(), lr=1e-2)
    for _ in range(steps):
        x = projection(inputs)
        loss = math.log(33) * (x - targets).square().mean() + reg.regularize(x).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    judge = sigreg(scale="samples", num_directions=64).eval()
    with torch.no_grad():
        x = projection(inputs)
        return x.std(0).mean().item(), judge.regularize(x).loss.item(), judge.regularize(torch.randn(rows, dim)).loss.item()


def test_default_sigreg_spreads_collapsed_rows_against_a_competing_loss():
    std, statistic, null = spread_from_collapse("samples")
    assert 0.5 <= std <= 2
    assert statistic < 3 * null


def test_mean_scaled_sigreg_leaves_collapsed_rows_collapsed():
    # The pre-0.2 default: each row's push outwards is N times weaker and loses to the competitor.
    std, statistic, null = spread_from_collapse("mean")
    assert std < 0.1 and statistic > 30 * null


def test_sigreg_directions_follow_the_step_and_survive_a_checkpoint():
    reg = sigreg()
    first = reg.directions(16, torch.device("cpu"))
    reg.regularize(torch.randn(10, 16))
    second = reg.directions(16, torch.device("cpu"))
    assert not torch.equal(first, second) and reg.step.item() == 1

    restored = sigreg()
    restored.load_state_dict(reg.state_dict())
    torch.testing.assert_close(restored.directions(16, torch.device("cpu")), second, rtol=0, atol=0)
    torch.testing.assert_close(sigreg().directions(16, torch.device("cpu")), first, rtol=0, atol=0)

    reg.eval()  # evaluation does not advance the schedule of directions
    reg.regularize(torch.randn(10, 16))
    assert reg.step.item() == 1


# --------------------------------------------------------------------------- config errors


@pytest.mark.parametrize(
    "objectives, message",
    [
        ([{"name": "jepa", "loss": "l3"}], "objectives[0].loss: expected cosine|mse|smooth_l1"),
        ([{"name": "jepa", "positions": "some"}], "objectives[0].positions: expected masked|all"),
        ([{"name": "jepa", "target": {"source": "teacher"}}], "objectives[0].target.source: expected student|ema"),
        ([{"name": "jepa", "target": {"layer": "middle"}}], "objectives[0].target.layer: expected last|half|<int>"),
        ([{"name": "jepa", "predictor": {"width": 64}}], "objectives[0].predictor: width: only used by kind: transformer"),
        ([{"name": "jepa", "predictor": {"kind": "transformer", "width": 12, "heads": 4}}],
         "objectives[0].predictor: width 12 must be a multiple of 2 x heads (8)"),
        ([{"name": "jepa", "target": {"source": "ema", "momentum": 0.9, "momentum_end": 0.5}}],
         "objectives[0].target: momentum 0.9 must not exceed momentum_end 0.5"),
        ([{"name": "jepa", "predcitor": {}}], "objectives[0].predcitor: unknown key"),
        ([{"name": "mlm", "rate": 0.1}], "objectives[0].rate: unknown key"),
        ([{"name": "vicreg"}, {"name": "jepa"}], "objectives[0].input: 'jepa.pred' is not published"),
        ([{"name": "jepa"}, {"name": "sigreg", "input": "student.cls"}],
         "objectives[1].input: expected student.masked|student.residues|student.pooled"),
        ([{"name": "sigreg", "num_directions": 0}], "objectives[0].num_directions: Input should be greater than"),
        ([{"name": "jepa", "score": "r2"}],
         "objectives[0]: score r2 needs loss mse or smooth_l1: a cosine loss leaves the predictions' scale free"),
        ([{"name": "jepa", "score": "accuracy"}], "objectives[0].score: expected auto|lift|r2"),
    ],
)
def test_bad_configs_name_the_key(objectives, message):
    with pytest.raises(RecipeError) as err:
        recipe_of(*objectives)
    assert message in str(err.value)
