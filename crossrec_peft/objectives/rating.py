"""`rating`: regression on explicit ratings (mean squared error), reported as RMSE and MAE."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError
from ..model.heads import RatingHead
from ..registry import objectives
from .base import Objective, ObjectiveContext


@dataclass
class RatingOptions:
    """The rating objective has no options yet; the dataclass keeps `{name: rating}` validated like the others."""


@objectives.register("rating", options=RatingOptions)
class RatingRegression(Objective):
    """MSE between the interactions' `rating` and bias + w·(u ⊙ e); logs RMSE and MAE."""

    name = "rating"

    def __init__(self, options: RatingOptions):
        super().__init__(options)
        self.head: RatingHead | None = None

    def prepare(self, model, context: ObjectiveContext) -> None:
        column = context.train_values.get("rating")
        values = np.concatenate(column) if column else np.array([])
        known = values[~np.isnan(values)] if len(values) else values
        if column is None:
            raise ConfigError(
                f"train.objective: rating needs explicit ratings, but the interactions table of {context.where} has "
                f"no 'rating' column (the movielens and generic importers keep it). Use retrieval or ctr for implicit feedback."
            )
        if len(known) == 0:
            raise ConfigError(f"train.objective: rating: every training interaction of {context.where} has an empty 'rating'.")
        # Start at the mean rating, moved by one standard deviation over the cosine range.
        head = RatingHead(model.dim, mean=float(known.mean()), spread=float(known.std() or 1.0))
        self.head = self.attach_head(model, head)
        self.batch_needs.values = {"rating": column}

    def __call__(self, outputs: dict, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        predicted = self.head(outputs["users"], outputs["items"])
        ratings = batch["ratings"].to(predicted.dtype)
        known = ~torch.isnan(ratings)
        if not bool(known.any()):
            zero = predicted.sum() * 0.0
            return zero, {"loss": 0.0}
        error = predicted[known] - ratings[known]
        mse = (error**2).mean()
        return mse, {"loss": float(mse.detach()), "rmse": float(mse.detach().sqrt()), "mae": float(error.detach().abs().mean())}


    def held_out_metrics(self, model, content, data, split, max_history) -> dict:
        """Test RMSE / MAE of the predicted ratings. Leave-one-out only: its test case of user u is u's last
        interaction, whose rating is known; other splits' cases are not tied to an interaction row here."""
        tests = split.test
        if split.kind != "leave_one_out" or len(tests) != len(data.sequences) or not np.array_equal(tests.targets, [s[-1] for s in data.sequences]):
            return {}
        ratings = np.array([v[-1] for v in data.values["rating"]], dtype=np.float64)
        return rating_errors(model, content, tests.histories, tests.targets, ratings, max_history, head=self.task)


@torch.no_grad()
def rating_errors(model, content: torch.Tensor, histories: list[np.ndarray], items: np.ndarray, ratings: np.ndarray, max_history: int, head: str = "rating") -> dict[str, float]:
    """RMSE and MAE of the model's rating head on held-out (history, item, rating) cases (empty ratings skipped)."""
    from ..evaluation import user_vectors

    model.eval()
    device = next(model.parameters()).device
    users = user_vectors(model, content, histories, max_history)
    vectors = model.item_vectors(content[torch.as_tensor(items)].to(device))
    predicted = model.heads[head](users, vectors).float().cpu().numpy()
    known = ~np.isnan(ratings)
    if not known.any():
        return {}
    error = predicted[known] - ratings[known]
    return {"rmse": float(np.sqrt((error**2).mean())), "mae": float(np.abs(error).mean()), "cases": int(known.sum())}
