"""`ctr`: pointwise click / interest prediction, binary cross-entropy on (user, item, label) pairs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..model.heads import BinaryHead
from ..model.two_tower import gather_rows
from ..registry import objectives
from ..data.negatives import NegativeSampler
from .base import NegativeOptions, Objective, ObjectiveContext, in_user_window, sampler_needs

# Sampled items per held-out positive when training draws none (labels only).
EVAL_NEGATIVES = 4

LABEL_MODES = ("auto", "data", "none")


@dataclass
class CTROptions(NegativeOptions):
    num_negatives: int = 4
    # Where labels come from: data (the interactions' `label` column, 0/1), none (every interaction is a
    # positive), auto (data when the column exists). Sampled negatives (label 0) are added in every mode.
    labels: str = "auto"

    def check(self) -> str | None:
        if self.labels not in LABEL_MODES:
            return f"ctr 'labels' must be one of {', '.join(LABEL_MODES)}, got '{self.labels}'."
        if self.labels == "none" and self.num_negatives == 0:
            return "ctr without negatives or labels has only positives to learn from: set num_negatives > 0 or labels: data."
        return self.check_negatives()


@objectives.register("ctr", options=CTROptions)
class PointwiseCTR(Objective):
    """Pointwise BCE on (user, item, label): labels from the data and/or sampled negatives, logit = a*cos + b."""

    name = "ctr"

    def __init__(self, options: CTROptions):
        super().__init__(options)
        self.use_labels = False
        self.head: BinaryHead | None = None
        self._eval_sampler: NegativeSampler | None = None
        self._seed = 0

    def prepare(self, model, context: ObjectiveContext) -> None:
        has_labels = "label" in context.train_values
        if self.options.labels == "data" and not has_labels:
            raise ConfigError(
                f"train.objective: ctr with labels: data needs a 'label' column (0/1) in the interactions table of "
                f"{context.where}, and it has none. Use labels: auto with num_negatives > 0 to learn from sampled negatives."
            )
        self.use_labels = has_labels and self.options.labels != "none"
        if not self.use_labels and self.options.num_negatives == 0:
            raise ConfigError(
                f"train.objective: ctr without negatives or labels: the interactions of {context.where} have no "
                f"'label' column and num_negatives is 0. Set num_negatives > 0 (sampled negatives) or add labels."
            )
        if self.use_labels:
            values = np.concatenate(context.train_values["label"]) if context.train_values["label"] else np.array([])
            known = values[~np.isnan(values)]
            bad = known[(known != 0) & (known != 1)]
            if len(bad):
                raise ConfigError(f"train.objective: ctr reads the 'label' column of {context.where} as 0/1, but it holds {bad[0]:g}.")
        self.head = self.attach_head(model, BinaryHead())
        sampler, needs = sampler_needs(self.options, context)
        # Held-out negatives are drawn like the training ones (uniform when training draws none).
        self._eval_sampler = sampler or NegativeSampler(context.item_counts, distribution="uniform")
        self._seed = context.seed
        if self.use_labels:
            needs.values = {"label": context.train_values["label"]}
        self.batch_needs = needs

    def __call__(self, outputs: dict, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        users, items = outputs["users"], outputs["items"]
        logits = [self.head((users * items).sum(-1))]
        if self.use_labels:
            labels = batch["labels"].to(users.dtype)
        else:
            labels = torch.ones(len(users), dtype=users.dtype, device=users.device)
        keep = [~torch.isnan(labels)]
        targets = [torch.nan_to_num(labels)]
        k = self.options.num_negatives
        if k > 0 and "negatives" in outputs:
            local = outputs["negatives"][:, :k]
            vectors = gather_rows(outputs["negative_vectors"], local)  # [N, k, D]; pairs share the pool's rows
            logits.append(self.head((users.unsqueeze(1) * vectors).sum(-1)).flatten())
            targets.append(torch.zeros(local.numel(), dtype=users.dtype, device=users.device))
            # A sampled item the user did interact with is not a negative.
            keep.append(~in_user_window(batch, outputs["row"], outputs["negative_items"][local]).flatten())
        logits, targets, keep = torch.cat(logits), torch.cat(targets), torch.cat(keep)
        loss = F.binary_cross_entropy_with_logits(logits[keep], targets[keep]) if bool(keep.any()) else logits.sum() * 0.0
        accuracy = ((logits[keep] > 0).to(targets.dtype) == targets[keep]).float().mean() if bool(keep.any()) else logits.new_zeros(())
        return loss, {"loss": float(loss.detach()), "accuracy": float(accuracy)}

    @torch.no_grad()
    def held_out_metrics(self, model, content, data, split, max_history) -> dict:
        """The seed's pointwise metrics (AUC, log-loss, precision, recall, F1 at 0.5) of the click head on the
        test split: each case's held-out item is a positive, and as many items as training samples per pair
        (sampled the same way, seeded; items of the user's history left out) are its negatives. Sampled
        negatives make these easier than real impressions would: compare runs with each other, not with
        click logs."""
        from ..evaluation import user_vectors
        from ..metrics import pointwise_metrics

        tests = split.test
        if self.head is None or self._eval_sampler is None or len(tests) == 0:
            return {}
        k = self.options.num_negatives or EVAL_NEGATIVES
        rng = np.random.default_rng([self._seed, 0xC7])
        negatives = self._eval_sampler.sample(tests.targets, k, rng)
        model.eval()
        device = next(model.parameters()).device
        scores, labels = [], []
        for start in range(0, len(tests), 512):
            part = slice(start, start + 512)
            histories = tests.histories[part]
            users = user_vectors(model, content, histories, max_history)
            items = np.concatenate([tests.targets[part, None], negatives[part]], axis=1)  # [n, 1 + k]
            vectors = model.item_vectors(content[torch.as_tensor(items)].to(device))
            logits = self.head((users.unsqueeze(1) * vectors).sum(-1)).float().cpu().numpy()
            target = np.zeros(items.shape, dtype=np.float64)
            target[:, 0] = 1.0
            keep = np.ones(items.shape, dtype=bool)
            for row, history in enumerate(histories):
                keep[row, 1:] = ~np.isin(items[row, 1:], history)
            scores.append(logits[keep])
            labels.append(target[keep])
        s, y = np.concatenate(scores), np.concatenate(labels)
        out = pointwise_metrics(s, y, logits=True)
        out.update({"cases": int(len(tests)), "negatives_per_case": int(k)})
        return out
