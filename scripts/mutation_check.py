"""Deliberate bugs, one at a time, against the tests meant to catch them.

    python scripts/mutation_check.py               # every mutation
    python scripts/mutation_check.py -k daml -k cca   # those whose name contains a keyword
    python scripts/mutation_check.py --list
    python scripts/mutation_check.py --jobs 2        # two scratch copies, two mutations at once

Each mutation replaces one snippet of one file with a wrong version, in a scratch copy of the
repository (the working tree is never touched), and runs the listed tests there with `pytest -x`;
the mutation is caught when they fail (or cannot be collected). Before anything runs, every
selected mutation must apply (its original snippet found exactly once in its file): a stale one
stops the check, naming it (update the list after a change). The unmutated copy then runs every
selected mutation's tests, which must pass. Prints a caught / survived table (Markdown) with the
total time, and exits with status 1 if a mutation survives.

A spot guarded twice appears twice, once per guard, each row running only that guard's tests.
"""

import argparse
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    original: str
    mutant: str
    tests: tuple[str, ...]


MUTATIONS = [
    # --- selection on validation, reporting on test ---------------------------------------------
    Mutation(
        "checkpoint chosen on the test loader",
        "hf_xmodal/training/trainer.py",
        "embed_split(run.unwrapped, run.validation)",
        "embed_split(run.unwrapped, run.test)",
        ("tests/test_model_selection.py",),
    ),
    Mutation(
        "best weights not reloaded: test scores the last epoch",
        "hf_xmodal/training/trainer.py",
        "    unwrapped.load_state_dict(best_weights)\n",
        "",
        ("tests/test_model_selection.py",),
    ),
    Mutation(
        "selection keeps the worst validation epoch",
        "hf_xmodal/training/trainer.py",
        'if run.schedule[-1] == stage and metrics[key] > state["best"]:',
        'if run.schedule[-1] == stage and metrics[key] < state["best"]:',
        ("tests/test_model_selection.py",),
    ),
    Mutation(
        "selection also keeps epochs of an earlier training stage",
        "hf_xmodal/training/trainer.py",
        'if run.schedule[-1] == stage and metrics[key] > state["best"]:',
        'if metrics[key] > state["best"]:',
        (
            "tests/test_model_selection.py::test_a_staged_model_is_selected_among_its_final_stage_epochs",
        ),
    ),
    Mutation(
        "embed_split leaves the model in training mode (dropout on)",
        "hf_xmodal/training/evaluation.py",
        "    model.eval()\n    parts: dict",
        "    parts: dict",
        ("tests/test_model_selection.py::test_embed_split_embeds_in_eval_mode",),
    ),
    # --- loss terms -----------------------------------------------------------------------------
    Mutation(
        "UNCSM: triplet positive and negative swapped in forward",
        "hf_xmodal/models/modeling_uncsm.py",
        "unit_distance(a, b), pos, ~relevant, c.triplet_margin",
        "unit_distance(a, b), ~relevant, pos, c.triplet_margin",
        ("tests/test_loss_terms.py", "tests/test_uncsm.py"),
    ),
    Mutation(
        "UNCSM: intra-media triplets use the anchor as its own positive",
        "hf_xmodal/models/modeling_uncsm.py",
        "own = relevant & (self_pair != torch.arange(len(all_u), device=u.device))",
        "own = relevant",
        ("tests/test_loss_terms.py",),
    ),
    Mutation(
        "UNCSM: contrastive hinge reversed (pushes beyond the margin)",
        "hf_xmodal/models/losses.py",
        "F.relu(margin - d).square()",
        "F.relu(d - margin).square()",
        ("tests/test_loss_terms.py",),
    ),
    Mutation(
        "UNCSM: metric network trained against inverted relevance",
        "hf_xmodal/models/modeling_uncsm.py",
        "binary_cross_entropy_with_logits(logits, relevant.float()",
        "binary_cross_entropy_with_logits(logits, (~relevant).float()",
        ("tests/test_loss_terms.py",),
    ),
    Mutation(
        "UNCSM: metric network scores text→image with the slots swapped",
        "hf_xmodal/models/modeling_uncsm.py",
        "net.grid(queries, gallery) if image_query else net.grid(gallery, queries).T",
        "net.grid(queries, gallery) if image_query else net.grid(queries, gallery)",
        ("tests/test_uncsm.py",),
    ),
    Mutation(
        "DAML: pull term dropped in the default 'all' mining",
        "hf_xmodal/models/losses.py",
        "return pull + hinge.mean() / (1 - positive_fraction)",
        "return hinge.mean() / (1 - positive_fraction)",
        ("tests/test_loss_terms.py", "tests/test_daml.py"),
    ),
    Mutation(
        "DAML: pull term dropped in hard mining (guard 1: metric-loss tests)",
        "hf_xmodal/models/losses.py",
        "return pull + hinge.amax(1).mean()",
        "return hinge.amax(1).mean()",
        ("tests/test_daml.py::test_hard_mining_pushes_each_rows_nearest_different_class_item",),
    ),
    Mutation(
        "DAML: pull term dropped in hard mining (guard 2: one-class batch)",
        "hf_xmodal/models/losses.py",
        "return pull + hinge.amax(1).mean()",
        "return hinge.amax(1).mean()",
        ("tests/test_daml.py::test_one_class_batch_is_pulled_together",),
    ),
    Mutation(
        "DAML: pair consistency compares misaligned pairs",
        "hf_xmodal/models/modeling_daml.py",
        "(2 - 2 * F.cosine_similarity(u, v)).mean()",
        "(2 - 2 * F.cosine_similarity(u, v.roll(1, 0))).mean()",
        ("tests/test_loss_terms.py",),
    ),
    Mutation(
        "gradient reversal does not reverse",
        "hf_xmodal/models/layers.py",
        "return -ctx.scale * grad, None",
        "return ctx.scale * grad, None",
        ("tests/test_daml.py",),
    ),
    Mutation(
        "dropout keeps a share p of the units instead of 1 - p",
        "hf_xmodal/models/layers.py",
        ".bernoulli_(1 - p)[rank * n : (rank + 1) * n]",
        ".bernoulli_(p)[rank * n : (rank + 1) * n]",
        ("tests/test_distributed.py::test_one_process_drops_exactly_what_torch_dropout_drops",),
    ),
    Mutation(
        "gradient reversal schedule starts at full strength",
        "hf_xmodal/models/layers.py",
        "2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0",
        "2.0 / (1.0 + math.exp(-gamma * (1 - progress))) - 1.0",
        ("tests/test_daml.py",),
    ),
    Mutation(
        "DSCMR: label-similarity likelihood with the sign of S·θ flipped",
        "hf_xmodal/models/modeling_dscmr.py",
        "(F.softplus(theta) - sim * theta).mean()",
        "(F.softplus(theta) + sim * theta).mean()",
        ("tests/test_loss_terms.py",),
    ),
    # --- DCKT loss terms and progressive pair selection -------------------------------------------
    Mutation(
        "DCKT: semantic term scores the image logits twice",
        "hf_xmodal/models/modeling_dckt.py",
        'text_logits, targets, reduction="none"',
        'image_logits, targets, reduction="none"',
        ("tests/test_loss_terms.py::test_dckt_terms",),
    ),
    Mutation(
        "DCKT: multi-hot targets not spread over the item's labels",
        "hf_xmodal/models/modeling_dckt.py",
        "targets = targets / targets.sum(1, keepdim=True).clamp_min(1)",
        "targets = targets",
        ("tests/test_loss_terms.py::test_dckt_terms",),
    ),
    Mutation(
        "DCKT: pair consistency leaves out fc7",
        "hf_xmodal/models/modeling_dckt.py",
        'for k in ("fc6", "fc7"))',
        'for k in ("fc6",))',
        ("tests/test_loss_terms.py::test_dckt_terms",),
    ),
    Mutation(
        "DCKT: pair consistency adds image and text instead of subtracting",
        "hf_xmodal/models/modeling_dckt.py",
        "(image_acts[k] - text_acts[k])",
        "(image_acts[k] + text_acts[k])",
        ("tests/test_loss_terms.py::test_dckt_terms",),
    ),
    Mutation(
        "DCKT: target terms ignore the pair weights of the round",
        "hf_xmodal/models/modeling_dckt.py",
        "return (weights * values).sum() / weights.sum().clamp_min(1e-12)",
        "return values.mean()",
        ("tests/test_loss_terms.py::test_dckt_terms",),
    ),
    Mutation(
        "DCKT: pair weights taken by batch position, not by row index",
        "hf_xmodal/models/modeling_dckt.py",
        "return weights.to(device)[index.to(device)]",
        "return weights.to(device)[: len(index)]",
        ("tests/test_loss_terms.py::test_dckt_terms",),
    ),
    Mutation(
        "DCKT: source pair-consistency term dropped",
        "hf_xmodal/models/modeling_dckt.py",
        '            add("pair_consistency", pair_distance(s_img, s_txt).mean())\n',
        "",
        ("tests/test_loss_terms.py::test_dckt_terms",),
    ),
    Mutation(
        "DCKT: media MMD pairs source images with target texts",
        "hf_xmodal/models/modeling_dckt.py",
        "for s, t in ((s_img, t_img), (s_txt, t_txt))",
        "for s, t in ((s_img, t_txt), (s_txt, t_img))",
        ("tests/test_loss_terms.py::test_dckt_terms",),
    ),
    Mutation(
        "DCKT: correlation MMD without the ×2 of fc9",
        "hf_xmodal/models/modeling_dckt.py",
        '+ 2 * discrepancy(both((s_img, s_txt), "fc9")',
        '+ discrepancy(both((s_img, s_txt), "fc9")',
        ("tests/test_loss_terms.py::test_dckt_terms",),
    ),
    Mutation(
        "DCKT: MMD against every target row, not the selected ones",
        "hf_xmodal/models/modeling_dckt.py",
        "t_img = {k: gather_batch(v)[selected] for k, v in t_img.items()}",
        "t_img = {k: gather_batch(v) for k, v in t_img.items()}",
        ("tests/test_loss_terms.py::test_dckt_terms",),
    ),
    Mutation(
        "MMD: kernel bandwidths not centred on the batch's mean distance",
        "hf_xmodal/models/losses.py",
        "    bandwidth = bandwidth / kernel_mul ** (kernels // 2)\n",
        "",
        ("tests/test_loss_terms.py::test_dckt_terms",),
    ),
    Mutation(
        "DCKT: selection probability favours the least consistent pairs",
        "hf_xmodal/models/modeling_dckt.py",
        "torch.log2((1 - normalised) / round_ + 1)",
        "torch.log2(normalised / round_ + 1)",
        ("tests/test_dckt.py::test_selection_probability_values",),
    ),
    Mutation(
        "DCKT: selection probability ignores the round",
        "hf_xmodal/models/modeling_dckt.py",
        "torch.log2((1 - normalised) / round_ + 1)",
        "torch.log2((1 - normalised) + 1)",
        ("tests/test_dckt.py::test_selection_probability_values",),
    ),
    Mutation(
        "DCKT: consistency AP not min-max normalised",
        "hf_xmodal/models/modeling_dckt.py",
        "normalised = (consistency - low) / (high - low) if high > low",
        "normalised = consistency if high > low",
        ("tests/test_dckt.py::test_selection_probability_values",),
    ),
    Mutation(
        "DCKT: selection draw inverted (kept with 1 − Prob)",
        "hf_xmodal/models/modeling_dckt.py",
        "torch.rand(len(prob), generator=generator) < prob",
        "torch.rand(len(prob), generator=generator) >= prob",
        (
            "tests/test_dckt.py::test_the_first_round_keeps_the_most_consistent_pair_and_never_the_least",
        ),
    ),
    Mutation(
        "DCKT: per-pair AP ranks the gallery worst first",
        "hf_xmodal/models/modeling_dckt.py",
        "scores.argsort(dim=1, descending=True, stable=True)",
        "scores.argsort(dim=1, descending=False, stable=True)",
        ("tests/test_dckt.py::test_per_query_average_precision_matches_the_evaluation_metric",),
    ),
    Mutation(
        "DCKT: per-pair AP divided by the gallery size",
        "hf_xmodal/models/modeling_dckt.py",
        "/ hits[:, -1].clamp_min(1)",
        "/ scores.shape[1]",
        ("tests/test_dckt.py::test_per_query_average_precision_matches_the_evaluation_metric",),
    ),
    Mutation(
        "DCKT: consistency counts the image → text direction twice",
        "hf_xmodal/models/modeling_dckt.py",
        "            scores.T, relevant\n",
        "            scores, relevant\n",
        ("tests/test_dckt.py::test_consistency_is_both_directions_with_the_source_network",),
    ),
    Mutation(
        "DCKT: consistency scored by the target network by default",
        "hf_xmodal/models/modeling_dckt.py",
        'network = self.source if self.config.consistency_network == "source" else self.target',
        'network = self.target if self.config.consistency_network == "source" else self.source',
        ("tests/test_dckt.py::test_consistency_is_both_directions_with_the_source_network",),
    ),
    # --- MHTN loss terms and modal-adversarial reversal -------------------------------------------
    Mutation(
        "MHTN: multi-hot targets not spread over the item's labels",
        "hf_xmodal/models/modeling_mhtn.py",
        "target = y / y.sum(1, keepdim=True).clamp_min(1)",
        "target = y",
        ("tests/test_loss_terms.py::test_mhtn_terms",),
    ),
    Mutation(
        "MHTN: source multi-hot targets not spread over the item's labels",
        "hf_xmodal/models/modeling_mhtn.py",
        "y = y / y.sum(1, keepdim=True).clamp_min(1)",
        "y = y",
        ("tests/test_loss_terms.py::test_mhtn_terms",),
    ),
    Mutation(
        "MHTN: star centred on the text instead of the image",
        "hf_xmodal/models/modeling_mhtn.py",
        'pair_distance(acts["image"], acts[m])',
        'pair_distance(acts["text"], acts[m])',
        ("tests/test_loss_terms.py::test_mhtn_terms",),
    ),
    Mutation(
        "MHTN: discriminator targets interleaved (modality labels misaligned)",
        "hf_xmodal/models/modeling_mhtn.py",
        "modality.repeat_interleave(len(y))",
        "modality.repeat(len(y))",
        ("tests/test_loss_terms.py::test_mhtn_terms",),
    ),
    Mutation(
        "MHTN: source classifier on fc6 instead of fc7",
        "hf_xmodal/models/modeling_mhtn.py",
        "self.source_classifier(s7)",
        "self.source_classifier(s6)",
        ("tests/test_loss_terms.py::test_mhtn_terms",),
    ),
    Mutation(
        "MHTN: single-modal MMD compares source fc6 with target fc7",
        "hf_xmodal/models/modeling_mhtn.py",
        'for k, s in (("fc6", s6), ("fc7", s7))',
        'for k, s in (("fc7", s6), ("fc7", s7))',
        ("tests/test_loss_terms.py::test_mhtn_terms",),
    ),
    Mutation(
        "MHTN: no gradient reversal before the discriminator",
        "hf_xmodal/models/modeling_mhtn.py",
        "hidden = reverse_gradient(self.discriminator_bottleneck(fc9), scale)",
        "hidden = self.discriminator_bottleneck(fc9)",
        (
            "tests/test_mhtn.py::test_discriminator_learns_modalities_and_the_network_gets_the_reversed_gradient",
        ),
    ),
    Mutation(
        "MHTN: gradient reversal with the sign of λ flipped",
        "hf_xmodal/models/modeling_mhtn.py",
        "reverse_gradient(self.discriminator_bottleneck(fc9), scale)",
        "reverse_gradient(self.discriminator_bottleneck(fc9), -scale)",
        (
            "tests/test_mhtn.py::test_discriminator_learns_modalities_and_the_network_gets_the_reversed_gradient",
        ),
    ),
    Mutation(
        "MHTN: gradient reversal at full strength from the start",
        "hf_xmodal/models/modeling_mhtn.py",
        "scale = reversal_schedule(self.training_progress)",
        "scale = 1.0",
        (
            "tests/test_mhtn.py::test_discriminator_learns_modalities_and_the_network_gets_the_reversed_gradient",
        ),
    ),
    Mutation(
        "gradient reversal does not reverse (guard 2: MHTN discriminator)",
        "hf_xmodal/models/layers.py",
        "return -ctx.scale * grad, None",
        "return ctx.scale * grad, None",
        (
            "tests/test_mhtn.py::test_discriminator_learns_modalities_and_the_network_gets_the_reversed_gradient",
        ),
    ),
    # --- CMSL loss terms and binarization ---------------------------------------------------------
    Mutation(
        "CMSL: straight-through gradient reversed",
        "hf_xmodal/models/modeling_cmsl.py",
        "c_u = h_u + (binarize(h_u) - h_u).detach()",
        "c_u = -h_u + (binarize(h_u) + h_u).detach()",
        ("tests/test_loss_terms.py::test_cmsl_straight_through_passes_the_codes_gradient_to_h",),
    ),
    Mutation(
        "CMSL: straight-through passes no gradient (sign only)",
        "hf_xmodal/models/modeling_cmsl.py",
        "c_u = h_u + (binarize(h_u) - h_u).detach()",
        "c_u = binarize(h_u)",
        ("tests/test_loss_terms.py::test_cmsl_straight_through_passes_the_codes_gradient_to_h",),
    ),
    Mutation(
        "CMSL: binarization modes swapped",
        "hf_xmodal/models/modeling_cmsl.py",
        'if config.binarization == "straight_through":',
        'if config.binarization == "relaxed":',
        ("tests/test_loss_terms.py::test_cmsl_terms",),
    ),
    Mutation(
        "CMSL: correlation θ without the ½",
        "hf_xmodal/models/modeling_cmsl.py",
        "pairwise_likelihood((a @ b.T - offset) / 2, sim, weights)",
        "pairwise_likelihood(a @ b.T - offset, sim, weights)",
        ("tests/test_loss_terms.py::test_cmsl_terms",),
    ),
    Mutation(
        "CMSL: image-image pairs replaced by image-text pairs",
        "hf_xmodal/models/modeling_cmsl.py",
        "for a, b in ((c_u, all_v), (c_u, all_u), (c_v, all_v))",
        "for a, b in ((c_u, all_v), (c_u, all_v), (c_v, all_v))",
        ("tests/test_loss_terms.py::test_cmsl_terms",),
    ),
    Mutation(
        "CMSL: multi-label relevance needs two shared labels",
        "hf_xmodal/models/modeling_cmsl.py",
        "sim = (y @ all_y.T > 0).float()",
        "sim = (y @ all_y.T > 1).float()",
        ("tests/test_loss_terms.py::test_cmsl_terms",),
    ),
    Mutation(
        "CMSL: pairwise likelihood with the sign of S·θ flipped",
        "hf_xmodal/models/modeling_cmsl.py",
        "nll = F.softplus(theta) - sim * theta",
        "nll = F.softplus(theta) + sim * theta",
        ("tests/test_loss_terms.py::test_cmsl_terms",),
    ),
    Mutation(
        "CMSL: balanced weights favour the commoner kind of pair",
        "hf_xmodal/models/modeling_cmsl.py",
        "torch.where(sim > 0, total / (2 * similar), total / (2 * (total - similar)))",
        "torch.where(sim > 0, total / (2 * (total - similar)), total / (2 * similar))",
        ("tests/test_loss_terms.py::test_cmsl_terms",),
    ),
    Mutation(
        "CMSL: correlation threshold raises θ instead of lowering it",
        "hf_xmodal/models/modeling_cmsl.py",
        "pairwise_likelihood((a @ b.T - offset) / 2, sim, weights)",
        "pairwise_likelihood((a @ b.T + offset) / 2, sim, weights)",
        ("tests/test_loss_terms.py::test_cmsl_terms",),
    ),
    Mutation(
        "CMSL: balanced_pairs ignored",
        "hf_xmodal/models/modeling_cmsl.py",
        "weights = balance_weights(sim) if config.balanced_pairs else None",
        "weights = None",
        ("tests/test_loss_terms.py::test_cmsl_terms",),
    ),
    Mutation(
        "CMSL: quantization pulls h to 0 instead of to sign(h)",
        "hf_xmodal/models/modeling_cmsl.py",
        "((binarize(h_u) - h_u) ** 2).mean() + (",
        "(h_u**2).mean() + (",
        ("tests/test_loss_terms.py::test_cmsl_terms",),
    ),
    Mutation(
        "CMSL: local θ without its scale κ",
        "hf_xmodal/models/modeling_cmsl.py",
        "theta = config.local_logit_scale * torch.stack(scores).mean(0)",
        "theta = torch.stack(scores).mean(0)",
        ("tests/test_loss_terms.py::test_cmsl_terms",),
    ),
    Mutation(
        "CMSL: word attention normalised over words instead of regions",
        "hf_xmodal/models/modeling_cmsl.py",
        "torch.softmax(temperature * cos, dim=-1)",
        "torch.softmax(temperature * cos, dim=1)",
        ("tests/test_loss_terms.py::test_cmsl_terms",),
    ),
    Mutation(
        "CMSL: local similarity averages padding words in",
        "hf_xmodal/models/modeling_cmsl.py",
        "return (per_word * mask).sum(1) / mask.sum(1).clamp_min(1)",
        "return per_word.mean(1)",
        ("tests/test_loss_terms.py::test_cmsl_terms",),
    ),
    # --- baselines ------------------------------------------------------------------------------
    Mutation(
        "CCA without centring",
        "hf_xmodal/baselines.py",
        "self.image_mean_, self.text_mean_ = x.mean(0), y.mean(0)",
        "self.image_mean_, self.text_mean_ = 0 * x.mean(0), 0 * y.mean(0)",
        ("tests/test_baselines.py::test_cca_centres_the_data",),
    ),
    # --- metrics --------------------------------------------------------------------------------
    Mutation(
        "AP: precision at rank k computed as cum / (k + 1)",
        "hf_xmodal/evaluation/metrics.py",
        "precision = cum / torch.arange(1, n_gallery + 1, dtype=torch.float32)\n        contrib",
        "precision = cum / torch.arange(2, n_gallery + 2, dtype=torch.float32)\n        contrib",
        ("tests/test_metrics.py",),
    ),
    Mutation(
        "tie rule: tied items in reverse gallery order",
        "hf_xmodal/evaluation/metrics.py",
        "keys |= torch.arange(n_gallery, dtype=torch.int64) << 1",
        "keys |= torch.arange(n_gallery - 1, -1, -1, dtype=torch.int64) << 1",
        ("tests/test_metrics.py",),
    ),
    Mutation(
        "Recall@K counts only the top K - 1",
        "hf_xmodal/evaluation/metrics.py",
        'put(f"hit@{k}", cum[:, min(k, n_gallery) - 1] > 0)',
        'put(f"hit@{k}", cum[:, max(min(k, n_gallery) - 2, 0)] > 0)',
        ("tests/test_metrics.py",),
    ),
    Mutation(
        "multi-label relevance needs two shared labels",
        "hf_xmodal/evaluation/metrics.py",
        "return ((ql != 0).float() @ (gl != 0).float().T) > 0",
        "return ((ql != 0).float() @ (gl != 0).float().T) > 1",
        ("tests/test_metrics.py",),
    ),
    Mutation(
        "Hamming distance from the wrong side of <q, g>",
        "hf_xmodal/evaluation/metrics.py",
        "((queries.shape[1] - queries @ gallery.T) / 2)",
        "((queries.shape[1] + queries @ gallery.T) / 2)",
        ("tests/test_metrics.py",),
    ),
    Mutation(
        "evaluation compares raw vectors under the cosine metric",
        "hf_xmodal/evaluation/metrics.py",
        "images, texts = F.normalize(images, dim=1), F.normalize(texts, dim=1)",
        "images, texts = images, texts",
        ("tests/test_metrics.py",),
    ),
    # --- index ----------------------------------------------------------------------------------
    Mutation(
        "index: cosine without normalisation (guard 1: brute-force comparison)",
        "hf_xmodal/evaluation/index.py",
        'return (F.normalize(t, dim=1) if self.metric == "cosine" else t).contiguous()',
        "return t.contiguous()",
        ("tests/test_index.py::test_float_search_matches_brute_force",),
    ),
    Mutation(
        "index: cosine without normalisation (guard 2: angle beats length)",
        "hf_xmodal/evaluation/index.py",
        'return (F.normalize(t, dim=1) if self.metric == "cosine" else t).contiguous()',
        "return t.contiguous()",
        ("tests/test_index.py::test_cosine_ranks_by_angle_not_length",),
    ),
    Mutation(
        "index: learned-metric search returns the worst first",
        "hf_xmodal/evaluation/index.py",
        "torch.sort(scores, dim=1, descending=True, stable=True)",
        "torch.sort(scores, dim=1, descending=False, stable=True)",
        ("tests/test_index.py",),
    ),
    Mutation(
        "index: Hamming search returns distances as scores (worst first)",
        "hf_xmodal/evaluation/index.py",
        "return torch.from_numpy(np.negative(distances, out=distances)), torch.from_numpy(indices)",
        "return torch.from_numpy(distances), torch.from_numpy(indices)",
        ("tests/test_index.py",),
    ),
    Mutation(
        "index: float search loses the offset of a gallery block",
        "hf_xmodal/evaluation/index.py",
        "indices.append(top_indices + start)",
        "indices.append(top_indices)",
        ("tests/test_index.py",),
    ),
    Mutation(
        "index: top k by slab maxima forgets each slab's offset",
        "hf_xmodal/evaluation/index.py",
        "candidates = (columns[:, None, :] + slabs[:, None]).view(rows, _SLABS * k)",
        "candidates = (columns[:, None, :] + 0 * slabs[:, None]).view(rows, _SLABS * k)",
        ("tests/test_index.py::test_float_top_k_by_slab_maxima_equals_top_k",),
    ),
    # --- data splits ----------------------------------------------------------------------------
    Mutation(
        "split overlap: the validation rows stay in the split they came from",
        "hf_xmodal/data/features.py",
        '(("validation", in_validation), (source, ~in_validation))',
        '(("validation", in_validation), (source, in_validation | ~in_validation))',
        ("tests/test_data.py",),
    ),
    # --- pretrained towers ----------------------------------------------------------------------
    Mutation(
        "image tower normalised with ImageNet constants (guard 1: reference features, real data)",
        "hf_xmodal/models/towers.py",
        "IMAGE_MEAN = IMAGE_STD = (0.5, 0.5, 0.5)",
        "IMAGE_MEAN, IMAGE_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)",
        ("tests/test_towers.py::test_towers_match_the_reference_features",),
    ),
    Mutation(
        "image tower normalised with ImageNet constants (guard 2: data-free)",
        "hf_xmodal/models/towers.py",
        "IMAGE_MEAN = IMAGE_STD = (0.5, 0.5, 0.5)",
        "IMAGE_MEAN, IMAGE_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)",
        ("tests/test_towers.py::test_image_normalisation_is_the_towers_own",),
    ),
]


def applies(m: Mutation) -> bool:
    """Whether the mutation changes its file: the original snippet is there exactly once."""
    return m.mutant != m.original and (ROOT / m.file).read_text().count(m.original) == 1


def scratch_copy(destination: Path) -> Path:
    """The repository's tracked and untracked (not ignored) files, copied under `destination`;
    `../shared` is linked beside the copy so that tests needing real data see it."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\0")
    repo = destination / "repo"
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / name)
    shared = ROOT.parent / "shared"
    if shared.exists():
        (destination / "shared").symlink_to(shared.resolve())
    return repo


def run_tests(repo: Path, tests: tuple[str, ...]) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": str(repo)}
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    result = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
    lines = (result.stdout + result.stderr).strip().splitlines()
    return result.returncode, lines[-1] if lines else ""


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", action="append", default=[], help="keep names containing this")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--jobs", type=int, default=1, help="mutations tested at once")
    parser.add_argument(
        "--skip_unmutated",
        action="store_true",
        help="do not first run the tests unmutated (only when they are known to pass)",
    )
    parser.add_argument(
        "--shard", type=int, nargs=2, metavar=("I", "N"), help="only every N-th mutation from I"
    )
    args = parser.parse_args(argv)
    keywords = [k.lower() for k in args.k]
    selected = [m for m in MUTATIONS if not keywords or any(k in m.name.lower() for k in keywords)]
    if args.shard:
        selected = selected[args.shard[0] :: args.shard[1]]
    if args.list:
        for m in selected:
            print(f"{m.name}  [{m.file}]  {' '.join(m.tests)}")
        return 0
    if not selected:
        raise SystemExit(f"no mutation name contains any of {args.k}")
    stale = [m.name for m in selected if not applies(m)]
    if stale:
        raise SystemExit(
            "these mutations no longer apply (the original snippet is not found exactly once in "
            "its file, or the mutant equals it): update them first\n  " + "\n  ".join(stale)
        )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still remove the scratch copy
    began = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="mutation_check_") as tmp:
        copies: queue.Queue[Path] = queue.Queue()
        for i in range(args.jobs):
            copies.put(scratch_copy(Path(tmp) / str(i)))
        repo = copies.queue[0]
        all_tests = tuple(dict.fromkeys(t for m in selected for t in m.tests))
        if args.skip_unmutated:
            print("unmutated: not run (--skip_unmutated)\n")
        else:
            code, summary = run_tests(repo, all_tests)
            if code != 0:
                raise SystemExit(f"the unmutated tests do not pass ({summary}): fix them first")
            print(f"unmutated: {summary}\n")

        def check(m: Mutation) -> tuple[Mutation, str, float, str]:
            repo = copies.get()
            path = repo / m.file
            original = path.read_text()
            path.write_text(original.replace(m.original, m.mutant))
            start = time.perf_counter()
            try:
                code, summary = run_tests(repo, m.tests)
            finally:
                path.write_text(original)
                copies.put(repo)
            # pytest: 1 = tests failed, 2 = collection error (the mutant breaks an import).
            result = {0: "SURVIVED", 1: "caught", 2: "caught"}.get(code, f"ERROR (pytest {code})")
            print(f"{result:>8}  {m.name}  ({summary})", flush=True)
            return m, result, time.perf_counter() - start, summary

        with ThreadPoolExecutor(args.jobs) as pool:
            rows = list(pool.map(check, selected))

    print("\n| mutation (deliberate bug) | file | tests | result |")
    print("| --- | --- | --- | --- |")
    for m, result, seconds, _ in rows:
        tests = ", ".join(f"`{t.removeprefix('tests/')}`" for t in m.tests)
        print(f"| {m.name} | `{m.file}` | {tests} | {result} ({seconds:.0f} s) |")
    caught = sum(result == "caught" for _, result, _, _ in rows)
    minutes = (time.perf_counter() - began) / 60
    print(f"\n{caught} of {len(rows)} caught ({minutes:.1f} min in all)")
    return 0 if caught == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
