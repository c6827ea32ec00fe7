"""`retrieval`: in-batch softmax over cosine similarities / temperature, with optional sampled negatives."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..registry import objectives
from .base import NegativeOptions, Objective, ObjectiveContext, in_user_window, sampler_needs


@dataclass
class RetrievalOptions(NegativeOptions):
    # Not negatives: another pair's target that is this pair's target item, and the other items of the same
    # user's window (items this user does interact with, later or earlier); likewise for sampled negatives.
    remove_accidental_hits: bool = True
    # Subtract log(expected count) = log(draws * q(j)) from each sampled negative's logit (sampled softmax), so
    # that popular items, drawn more often, are not over-penalised.
    logq_correction: bool = True
    # The same correction for the in-batch negatives (Yi et al., RecSys 2019): another pair's target is a
    # negative drawn in proportion to how often it is a training target, so without the correction the softmax
    # learns log p(item | user) - log q(item) and ranks popular items too low. q is each item's share of the
    # training interactions (add-one smoothed).
    in_batch_logq: bool = False

    def check(self) -> str | None:
        return self.check_negatives()


@objectives.register("retrieval", options=RetrievalOptions)
class InBatchSoftmax(Objective):
    """In-batch softmax over cosine similarities / temperature (+ optional sampled negatives with logQ correction)."""

    name = "retrieval"

    def __init__(self, options: RetrievalOptions):
        super().__init__(options)
        self.sampler = None
        self._log_q: torch.Tensor | None = None

    def prepare(self, model, context: ObjectiveContext) -> None:
        self.sampler, self.batch_needs = sampler_needs(self.options, context)
        if self.options.in_batch_logq:
            counts = torch.as_tensor(context.item_counts, dtype=torch.float64) + 1.0
            self._log_q = (counts / counts.sum()).log().float()

    def prior(self, outputs: dict, batch: dict, items: torch.Tensor) -> torch.Tensor | None:
        """A fixed term added to every pair's logit of each of `items` (the batch's targets, then the sampled
        negatives): [len(items)] or [pairs, len(items)]; None, here, adds nothing. A subclass overrides it to
        train beside a score prior (an item popularity prior, the untuned backbone's similarity), which the
        model then need not learn; it ranks with the same term added. benchmarks/score_priors.py has two;
        docs/real-data.md what they measured."""
        return None

    def _with_prior(self, logits: torch.Tensor, outputs: dict, batch: dict, items: torch.Tensor) -> torch.Tensor:
        term = self.prior(outputs, batch, items)
        return logits if term is None else logits + term

    def __call__(self, outputs: dict, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        scale = outputs["logit_scale"]
        item, row = outputs["target_item"], outputs["row"]
        logits = self._with_prior(scale * outputs["users"] @ outputs["items"].T, outputs, batch, item)
        if self._log_q is not None:
            # Subtracting log q(j) from column j also shifts the positive on the diagonal, as the correction
            # prescribes: the softmax then models p(item | user) / q(item) consistently.
            logits = logits - self._log_q.to(logits.device)[item].view(1, -1)
        if self.options.remove_accidental_hits:
            false_negative = (item.view(-1, 1) == item.view(1, -1)) | (row.view(-1, 1) == row.view(1, -1))
            false_negative.fill_diagonal_(False)
            logits = logits.masked_fill(false_negative, torch.finfo(logits.dtype).min)
        k = self.options.num_negatives
        if k > 0 and "negatives" in outputs:
            # Every sampled negative in the batch is a candidate for every pair (a shared pool).
            used = torch.unique(outputs["negatives"][:, :k])
            ids = outputs["negative_items"][used]
            extra = self._with_prior(scale * outputs["users"] @ outputs["negative_vectors"][used].T, outputs, batch, ids)
            if self.options.logq_correction and self.sampler is not None:
                draws = outputs["negatives"][:, :k].numel()
                log_q = torch.as_tensor(self.sampler.log_expected_count(ids.cpu().numpy(), draws), dtype=extra.dtype, device=extra.device)
                extra = extra - log_q
            if self.options.remove_accidental_hits:
                extra = extra.masked_fill(in_user_window(batch, row, ids), torch.finfo(extra.dtype).min)
            logits = torch.cat([logits, extra], dim=1)
        labels = torch.arange(len(logits), device=logits.device)
        loss = F.cross_entropy(logits, labels)
        return loss, {"loss": float(loss.detach())}
