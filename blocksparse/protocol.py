"""The study's protocol, written down once: which images decide what, one training budget, one rule.

- **val-stop** (the first 2,500 of the checkpoint's 5,000 held-out images): early stopping and
  training curves, nothing else.
- **val-select** (the other 2,500): every choice - configuration, learning rate, rate weight,
  quality, operating point - made *after* the training it chooses among.
- **test**: touched once per reported model, after every choice; it chooses nothing.

Every trained family (block-sparse, learned bottleneck, the classifier of decoded images, the
fine-tuned reference) gets ``BUDGET``. The operating point of each family at each split is the
first rung of its ladder (``LADDERS``, walked from the lowest rate budget up) whose val-select
accuracy is within one point of the reference's, by the paired test (``answer.walk``); it is then
trained with ``SEEDS`` and tested once per seed, and the answer's row is the hierarchical
bootstrap over those seeds (``stats.hierarchical_bootstrap``).
"""
from __future__ import annotations

import math

from .data import load_dataset
from .training import Budget

VAL_STOP, VAL_SELECT = "val-stop", "val-select"
SEEDS = (0, 1, 2)
SPLIT_POINTS = ("layer1", "layer2", "layer3")  # where the network is split (model.SPLIT_POINTS); data.SPLITS are image sets
FAMILIES = ("block-sparse", "bottleneck", "webp-finetuned", "webp")
SPLIT_FREE = ("reference", "webp-finetuned", "webp")  # the same model whatever the split

# The pre-registered ladders, each walked from its lowest rate budget up: the first rung whose
# val-select accuracy is within one point of the reference's (seed 0, paired) is the family's
# operating point at that split, and no rung above it is trained. A rung is a budget, not a measured
# rate (a rate weight's model may spend more bits than the next rung's), so the operating point is
# the first within in ladder order, not the lowest measured rate among every rung. Block-sparse:
# target rates (bpp of amortized streams on val-select), each rung's configuration and recipe chosen
# by a screen on val-select (``SCREEN``); bottleneck: rate weights, high to low; WebP: qualities, up
# to its highest (95 and 100 were added when WebP as is missed at 90 on val-select: a baseline's
# ladder ends at its strongest setting, not where ours happened to stop).
LADDERS = {"block-sparse": (0.25, 0.5, 1.0, 2.0, 4.0), "bottleneck": (3.2, 0.8, 0.2, 0.05, 0.0125),
           "webp-finetuned": (0, 5, 10, 20, 30, 50, 70, 90, 95, 100), "webp": (0, 5, 10, 20, 30, 50, 70, 90, 95, 100)}
# The learned bottleneck's entropy model learns at this rate (its other weights at the budget's):
# with Adam each prior parameter moves about this much per step, whatever the rate weight. At the
# budget's 1e-3 the layer1 ladder's rate fell by the same ~0.0002 bpp per step for every weight from
# 0.05 to 3.2 (1.09 bpp at the start, 0.72-0.90 at step 1,800: the prior's speed set the rate, not
# the weight); at 1e-2 the weight sets it (val-stop, 300 steps: ``data/answer/decisions/
# bottleneck_prior_lr.json``). Chosen on val-stop curves, before any bottleneck was tested; the
# layer1 ladder trained at 1e-3 is kept in ``data/answer/superseded/``.
BOTTLENECK_PRIOR_LR = 1e-2
# ... and its tail trains on the latents as coded (rounded, with a straight-through gradient; the
# rate still on the noisy ones: ``Bottleneck.forward(quantization="mixed")``). Trained on noisy
# latents the tail learned to read the noise, not the code: at lambda=3.2 the rounded path's val-stop
# accuracy fell to 24% by step 600 (0.19 bpp), on rounded latents it held 88% (0.24 bpp) (val-stop,
# 600 steps after layer1: ``data/answer/decisions/bottleneck_quantization.json``). Chosen on val-stop
# curves before any bottleneck was tested; the ladders trained on noisy latents are kept in
# ``data/answer/superseded/``.
BOTTLENECK_QUANTIZATION = "mixed"
# successive halving on val-select among the configurations at or under a rung's rate, each with
# and without the block group-lasso: 60 steps, then the better half 120 steps, each arm scored on
# 1,000 val-select images before and after its training (``evals``). The arms are the frontier of
# the configurations under the rung: for each mode, block size and bit depth only the largest keep
# ratio at or under it (a smaller ratio of the same codec keeps a subset of its blocks, so it is
# not a candidate for the best accuracy at that rate).
SCREEN = dict(screen_steps=60, rounds=2, group_lasso_weights=(0.0, 1e-5), val_select_images=1000,
              rate_images=200, fit_images=2000, evals=1, frontier_only=True)


# One training budget for every trained family, ``training.Budget``'s defaults (validation on
# val-stop): "the same budget" is ``==``.
BUDGET = Budget()


def stopping_data(dataset: str = "fashion-mnist", subset: int | None = None):
    """The images early stopping watches (``VAL_STOP``: all 2,500, or ``subset`` evenly spaced ones)."""
    return load_dataset(dataset, VAL_STOP, subset=subset)


def selection_data(dataset: str = "fashion-mnist", split: str = VAL_SELECT, subset: int | None = None):
    """The images every choice is made on. Only ``VAL_SELECT`` is accepted: a selection helper
    asked for any other split (the test set above all) is a ValueError, never a silent read."""
    if split != VAL_SELECT:
        raise ValueError(f"split: choices are made on {VAL_SELECT!r} only, got {split!r}"
                         + (" (the test set chooses nothing)" if split == "test" else ""))
    return load_dataset(dataset, VAL_SELECT, subset=subset)


# ===========================================================================
# Protocol v2 (issue 42), pre-registered: these rules were committed before any v2 run; the README
# cites the commit. v1 above stays as it was: its cards (``data/answer/*.json``) and its answer are
# the archived v1; v2's cards go to ``data/answer/v2/``. A later change is a v3, never an edit here.
# ===========================================================================
# Why a v2: v1 decided on val-select alone (2,500 images) by the lower end of a 95% paired interval
# at >= -1 point. Its half-width was ~0.56 points, so a rung whose true difference is -0.5 passed
# about one time in three (``power.csv``, rule "v1"): the verdict had no power.
#
# Images, each with one role (no image both screens and gates):
#   val-stop    early stopping and curves (as v1), and every screen's scores (``SCREEN_V2``);
#   val-select  the pick: which rung is a family's operating point, by point estimate;
#   test        the gate: the operating point's seeds, tested once each, confirm it or not.
# The rule:
#   1. Walk the coarse ladder from the lowest rate up. A rung is picked when its seed 0's paired
#      difference from the reference's seed 0 on val-select (point estimate) is >= -PICK_THRESHOLD.
#   2. Refine between the last rung missed and the coarse pick: the rungs a factor REFINE (sqrt 2)
#      apart, walked from the lowest rate up; the first picked is the operating point (else the
#      coarse pick). When the ladder's first rung is picked, rungs below it (the coarse factor
#      again) are walked down until one misses, and the refinement runs above that miss.
#   3. Train the operating point's seeds 1-4; test seeds 0-4 once each on all 10,000 test images.
#      The row is "confirmed within" when the lower end of the hierarchical bootstrap interval
#      (seeds and images, each seed paired with the reference's run of the same seed) of the
#      difference is >= -1 point at confidence 1 - 0.05 / CONFIRMATIONS (Bonferroni over every
#      confirmation v2 may make: block-sparse and the bottleneck at three splits, and WebP with a
#      fine-tuned classifier once). A failed confirmation is reported as failed; no other rung
#      is then tried (the test set chooses nothing).
# Power (``power.power_table`` -> ``data/results/power.csv``): the probability that a rung whose
# true difference is -0.5 passes the pick and the confirmation, from the discordance observed on
# v1's val-select cards near the margin: at least 0.8 by design (``test_power.py``). Five seeds, not
# three: with three, resampling the seeds alone widened the Bonferroni interval so far that a rung
# at -0.5 was confirmed 78 times in 100 (100 simulations of the rule at v1's discordance).
#
# Reused from v1, because the recipe is the same experiment: the reference (seeds 0-2, tested;
# seeds 3 and 4 are trained under the same recipe and tested once each) and
# WebP with a fine-tuned classifier's rungs (no screen: quality is its only knob). Every run that a
# screen chooses for (block-sparse, the bottleneck) is new.
PROTOCOL_V2 = "v2"
SEEDS_V2 = (0, 1, 2, 3, 4)
PICK_THRESHOLD = 0.01  # the pick: point estimate within the one-point margin on val-select
CONFIRMATIONS = 7  # 2 trained families x 3 splits + WebP fine-tuned (input compression, no split)
CONFIRM_CONFIDENCE = 1 - 0.05 / CONFIRMATIONS
REFINE = math.sqrt(2)
# Coarse ladders (the refinement fills in steps of REFINE around the crossing). Block-sparse:
# target rates, bpp of amortized streams; bottleneck: rate weights, high to low; WebP with a
# fine-tuned classifier: qualities in steps of 5 from 50 to 95, then 100 (input compression: one
# row, not one per split; WebP as is is reported beside it as a bound, with its classifier's own
# gap on uncompressed images).
LADDERS_V2 = {"block-sparse": (0.25, 0.5, 1.0, 2.0, 4.0), "bottleneck": (3.2, 0.8, 0.2, 0.05, 0.0125),
              "webp-finetuned": (50, 55, 60, 65, 70, 75, 80, 85, 90, 95, 100)}
COARSE_FACTOR = {"block-sparse": 2.0, "bottleneck": 4.0}  # below the first rung, the same factor again
# One screen for every trained family (block-sparse and the bottleneck), per rung: 6 arms, each
# fine-tuned from the shipped model for 150 steps and scored on all 2,500 val-stop images; the
# best 3 are trained again from it for 300 steps and scored; the best is the rung's pick. The
# screen spends 6 x 150 + 3 x 300 = 1,800 steps, one budget. What "best" is:
#   block-sparse  the highest accuracy (every arm is at or under the rung's rate);
#   bottleneck    the lowest val-stop cross-entropy + lambda x bpp of its real streams: a rung is a
#                 rate weight, not a rate, so arms land at different rates and the trade-off they
#                 were trained for is what compares them.
# The arms. Block-sparse: the frontier configurations under the rung (v1's ``frontier_of``), ranked
# by their accuracy on val-stop before any training, the best 3, each with group-lasso 0 and 1e-5.
# Bottleneck: three recipes x two widths (latent channels 8 and 24):
#   joint      v1's anchor: GELU layers, a logistic prior per channel, one stage training the
#              whole network (distillation + cross-entropy + lambda x rate), rounded latents.
#   two-stage  the Entropic Student's recipe (Matsubara et al. 2022): GDN layers and a
#              non-parametric factorized density (CompressAI's GDN and EntropyBottleneck);
#              stage 1 (half the steps): head and bottleneck fit the uncompressed model's features
#              after the split and after each later stage (mean squared error, summed) plus
#              lambda x rate, the tail frozen; stage 2 (the other half): decoder and tail with
#              distillation + cross-entropy, encoder and density frozen.
#   hybrid     stage 1 as two-stage, then the whole network jointly as ``joint`` (half and half).
# Every recipe counts its steps over all its stages: one budget (``BUDGET``) for every run.
SCREEN_V2 = dict(arms=6, rounds=(150, 300), keep=3, images=VAL_STOP, config_arms=3, group_lasso_weights=(0.0, 1e-5))
BOTTLENECK_RECIPES = ("joint", "two-stage", "hybrid")
BOTTLENECK_WIDTHS = (8, 24)
# Budget sensitivity (after layer3, seed 0, val-select only): the reference and each trained
# family's operating point (or closest rung) trained with 4x the steps.
SENSITIVITY_FACTOR = 4


# ===========================================================================
# Protocol v2.1: one amendment to v2, committed before any v2 run finished (v2's section above stays
# as it was registered). Seen in v2's first screen (bottleneck after layer3, lambda=3.2, on val-stop,
# five of six arms after 150 steps: ``data/answer/v2/superseded/``): the students' density learned at
# the budget's rate (1e-3) while v1's anchor's prior learns at ``BOTTLENECK_PRIOR_LR`` (1e-2, chosen
# in v1 because a slow prior, not the rate weight, set the rate). The students spent 2.6-2.9 times
# the joint arm's bits at 8 channels, so the screen compared their priors' speed more than their
# recipes. v2.1 gives the students the same help: the non-parametric density's parameters (not its
# quantiles, which keep CompressAI's auxiliary loss at its own rate) learn at ``STUDENT_DENSITY_LR``.
# Every other rule of v2 holds unchanged; v2.1's cards say "v2.1". No val-select or test number of
# any v2 run had been computed when this was decided.
# ===========================================================================
PROTOCOL_V2_1 = "v2.1"
STUDENT_DENSITY_LR = BOTTLENECK_PRIOR_LR


# ===========================================================================
# Protocol v2.2: a second amendment, committed before any v2 run of WebP with a fine-tuned
# classifier (v2 and v2.1 above stay as they were). v2's walk goes below a picked first rung by
# ``COARSE_FACTOR``, which v2 gave block-sparse and the bottleneck but not WebP with a fine-tuned
# classifier: v2 did not say where that walk goes when quality 50, its first rung, is picked. And
# quality 50 is picked on v1's val-select card of the same recipe (-0.56 points; v1's cards at
# qualities 30 and 20 read -0.80 and -1.04). Those val-select numbers, public since v1, are what this
# amendment was written after; no test number chose anything. v2.2: below a picked first rung, WebP
# with a fine-tuned classifier walks down ``WEBP_BELOW`` (v1's qualities under 50) until a quality
# misses, then the qualities ``WEBP_STEP`` apart above that miss, lowest first, as the other
# families refine: the first picked is the operating point, else the lowest quality picked on the way
# down. Its rungs are v1's runs where v1 trained them (the same recipe, reused as v2 reuses 50, 70
# and 90), new runs otherwise; as input compression it has one walk and one row, not one per split.
# Every other rule holds unchanged; cards and screens written from now on say "v2.2". No v2 run of
# this family had been trained or tested when this was decided.
# ===========================================================================
PROTOCOL_V2_2 = "v2.2"
WEBP_BELOW = (30, 20, 10, 5, 0)
WEBP_STEP = 5


# ===========================================================================
# Protocol v2.3: a third amendment, committed before any screen at layer2 or layer1 (v2 to v2.2 above
# stay as they were). Seen after layer3 on val-select (seed 0; v2.2's runs beside v1's runs of the
# same rung, budget and seed: docs/protocol_v2.md, "Does a screen's pick hold at the full budget?"):
# the screen's rounds of 150 and 300 steps rank the bottleneck's recipes by how fast their rate
# falls, not by where the budget takes them. At lambda 3.2 and 0.8 the screen picked hybrid, and
# v1's joint run was better at the full budget in both accuracy and rate (-1.16 points at 0.064 bpp
# against -2.36 at 0.084; -0.68 at 0.094 against -1.04 at 0.112), while after 300 steps joint's
# streams were 1.5-2 times hybrid's. v2.3 ends every screen with a final round at the full budget
# (``FINAL_ROUND``): two finalists, the best arm of the halving's last round and the best arm of that
# round of another kind (``FINAL_KINDS``: the bottleneck, another recipe; block-sparse, another
# configuration; if every arm is of one kind, the second best), each trained as a rung's run is
# (``BUDGET``, seed 0, from the shipped model, its kept weights chosen on val-stop) and scored by the
# screen's own score on every val-stop image. The better finalist is the pick, and its run is the
# rung's run: the walk decides on its val-select card, as before. The other finalist is measured on
# val-stop only; its card stays with the screen and its weights do not ship. One screen for both
# families: per rung, the halving's 1,800 steps and two full runs (one run more than v2.2).
# v2.3 governs the walks of block-sparse and the bottleneck at ``FINAL_ROUND_SPLITS`` (layer2 and
# layer1), none of which had begun when it was committed. The walks after layer3 ended under v2.2 and
# keep their rungs, picks and operating points; their confirmations go on under v2's rule. WebP with
# a fine-tuned classifier has no screen. Every other rule holds unchanged; cards and screens written
# from now on say "v2.3". No val-select or test number of layer2 or layer1 under v2 existed when this
# was decided.
# ===========================================================================
PROTOCOL_V2_3 = "v2.3"
FINAL_ROUND = dict(arms=2, steps=BUDGET.steps, images=VAL_STOP)
FINAL_KINDS = {"bottleneck": ("recipe",), "block-sparse": ("mode", "block_size", "ratio", "bits")}
FINAL_ROUND_SPLITS = ("layer2", "layer1")


# ===========================================================================
# Protocol v2.4: a fourth amendment, committed before any run at layer2 or layer1 (v2 to v2.3 above
# stay as they were). Seen after layer3: v2's walk picks the lowest rate whose seed 0's point estimate
# on val-select is >= -1 point, so it aims at rungs whose true difference is near -1, where the
# confirmation has no power (``power.csv``: 0.0 at a true -1). The power v2 stated (0.88 at -0.5) is
# that of one rung taken alone, not of the rung the walk ends on. Block-sparse's operating point after
# layer3 read -0.96 on val-select and -1.09 [-1.65, -0.63] on test: not confirmed.
# v2.4 states the power of the walk itself and moves the pick to where the confirmation has power:
#   the pick   a rung is picked when its seed 0's paired difference from the reference's seed 0 on
#              val-select (point estimate) is >= -PICK_THRESHOLD_V2_4 (0.4 point: the largest threshold,
#              in steps of 0.1 point down from v2's 1, whose walk has power >= 0.8 at both slopes
#              below, at the observed discordance; simulated before this commit, 6,000 walks each:
#              0.86 for block-sparse and 0.81 for the bottleneck at 0.4 point, 0.84 and 0.75 at 0.5);
#   the rest   unchanged: the walk (``LADDERS_V2``, ``REFINE``, ``COARSE_FACTOR``), v2.3's final round,
#              and the confirmation (5 seeds on test, lower end >= -1 point at ``CONFIRM_CONFIDENCE``).
# The walk's power (``power.power_walk`` -> ``power.csv``, rules "v2.2 walk" and "v2.4 walk"): the
# probability that a walk ends on an operating point that is then confirmed, when the family's true
# curve crosses -0.5 point somewhere on its ladder. Each simulation runs the walk's own code
# (``walk.ladder``) on a straight curve of difference against log2(rung), at the slopes v2's layer3
# walks show between their operating point and the next rung walked above it (``power.walk_slopes``,
# val-select), with a pick's noise from the discordance ``power.observed`` reads; the confirmation's
# power at the operating point's true difference is ``power.power_confirm``'s, interpolated. The price
# is rate: an operating point nearer the reference sits higher on the ladder (about 0.4 doubling of
# rate above the -0.5 crossing in those simulations, against 1 to 0.3 doubling below it for v2.2's walk).
# What it does not cover: a family whose curve levels off below -0.4 point is picked nowhere; its
# row then says that no rung reached the pick, not that it is beyond one point.
# Scope: the walks of block-sparse and the bottleneck at ``FINAL_ROUND_SPLITS`` (layer2, layer1), none
# of which had begun. Layer3's walks ended under v2.2, and WebP with a fine-tuned classifier's walk
# (under way, v2.2) has already picked rungs at -1 point on val-select: its threshold changed now would
# be chosen after seeing them. Both keep v2's pick, and their rows state that walk's power.
# Disclosure: decided after seeing layer3's test numbers (block-sparse's five seeds, the bottleneck's
# seed 0). They choose nothing at layer2 or layer1, whose walks had no run. Cards and screens written
# from now on say "v2.4".
# ===========================================================================
PROTOCOL_V2_4 = "v2.4"
PICK_THRESHOLD_V2_4 = 0.004
PICK_V2_4_SPLITS = FINAL_ROUND_SPLITS


# ===========================================================================
# Protocol v2.5: a fifth amendment, committed before any run at layer2 or layer1 (v2 to v2.4 above
# stay as they were). v2.4 chose its pick (-0.4 point) as the largest threshold, in steps of 0.1 point,
# whose walk has power >= 0.8 at both of layer3's slopes, from 6,000 walks and a confirmation curve of
# 100 simulations a point, with no error stated. Rendered at those sizes, the bottleneck's walk read
# 0.7999: on the target, not above it. Measured again before this commit, with the simulation's
# standard error (``power.power_walk``'s ``se``: the walks' spread and the curve's binomial error,
# weighted as the walk uses it) at twice the sizes (a curve of 200 simulations a point, 12,000 walks;
# slopes 0.92 and 0.43 point per step, observed discordance 0.0264):
#                   -0.5            -0.4            -0.3            -0.2
#   block-sparse    0.821 (0.005)   0.854 (0.005)   0.855 (0.005)   0.824 (0.005)
#   bottleneck      0.730 (0.007)   0.793 (0.006)   0.821 (0.005)   0.809 (0.005)
# At -0.4 the bottleneck's walk is below the target. v2.5 keeps v2.4's criterion and counts the error:
#   the pick   at layer2 and layer1, block-sparse and the bottleneck pick a rung when its seed 0's
#              paired difference from the reference's seed 0 on val-select (point estimate) is
#              >= -PICK_THRESHOLD_V2_5 (0.3 point: the largest threshold, in steps of 0.1 point, whose
#              walk's power less 1.96 standard errors of its simulation is >= 0.8 at both slopes, at
#              the observed discordance);
#   the sizes  ``power.csv``'s walk rows are simulated at these sizes (``POWER_CURVE_SIMS`` a point of
#              the confirmation's curve, ``POWER_WALKS`` walks) and carry their standard error;
#   the rest   unchanged: the walk, v2.3's final round, the confirmation (5 seeds on test, lower end
#              >= -1 point at ``CONFIRM_CONFIDENCE``), the scope of v2.4 (``PICK_V2_4_SPLITS``).
# The price is rate: in those simulations the operating point sits 0.50 (block-sparse) and 0.67
# (bottleneck) of a step above the -0.5 crossing, against 0.37 and 0.40 at -0.4, and no rung reaches
# the pick in 10% of the walks (6-7% at -0.4), which count as failures in the power above.
# Disclosure: the second move of this threshold. Both came before any run at layer2 or layer1, and
# what moved it is simulations, not runs. Layer3's and WebP's walks keep v2's pick at -1. A card of a
# layer3 confirmation or of WebP's walk may say v2.4 or v2.5, by when its process started: the rules
# they run under are the same. Cards and screens written from now on say "v2.5".
# ===========================================================================
PROTOCOL_V2_5 = "v2.5"
PICK_THRESHOLD_V2_5 = 0.003
POWER_CURVE_SIMS = 200
POWER_WALKS = 60 * POWER_CURVE_SIMS
