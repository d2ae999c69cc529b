"""Train a Bradley–Terry reward model (an ensemble of MLPs) on preference pairs (torch).

Each member ``r_m(x, a)`` is a tanh MLP over ``[standardised context, action features]``;
all members train together on the same minibatches from their own initialisations
(Coste et al. 2024 train ensembles from different seeds), minimising the Bradley–Terry
negative log-likelihood of the labels (Bradley & Terry 1952; Christiano et al. 2017;
Ouyang et al. 2022, eq. 1)

    L = −mean_i log σ(r(x_i, chosen_i) − r(x_i, rejected_i))

with Adam and weight decay. A tenth of the training pairs is kept aside; the epoch with
the lowest validation loss is kept (early stopping with ``patience``). The result is a
``rewards.reward_model.RewardModel`` that scores in NumPy.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np

from rewards.preferences import PreferencePairs, check_pairs
from rewards.reward_model import BradleyTerryConfig, RewardModel

__all__ = ["fit_reward_model"]


def fit_reward_model(pairs: PreferencePairs, config: BradleyTerryConfig = BradleyTerryConfig(),
                     *, seed: int = 0) -> RewardModel:
    """A reward model fitted to ``pairs`` (module docstring).

    Raises:
        DataError: pairs ``check_pairs`` refuses, or too few to keep a validation part.
    """
    import torch

    check_pairs(pairs)
    rng = np.random.default_rng(seed)
    train, val = pairs.split(config.validation, rng)
    x_mean = train.context.mean(axis=0).astype(np.float64)
    x_std = train.context.std(axis=0).astype(np.float64)
    x_std = np.where(x_std < 1e-6, 1.0, x_std)

    def tensors(p: PreferencePairs) -> tuple[Any, Any]:
        x = (p.context - x_mean) / x_std
        return (torch.as_tensor(np.concatenate([x, p.features(p.chosen)], axis=1),
                                dtype=torch.float32),
                torch.as_tensor(np.concatenate([x, p.features(p.rejected)], axis=1),
                                dtype=torch.float32))

    gen = torch.Generator().manual_seed(int(seed))
    widths = [train.context.shape[1] + pairs.action_dim, *config.hidden, 1]
    m = config.members
    params = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        bound = 1.0 / np.sqrt(fan_in)           # torch.nn.Linear's default initialisation
        w = (torch.rand(m, fan_in, fan_out, generator=gen) * 2 - 1) * bound
        b = (torch.rand(m, fan_out, generator=gen) * 2 - 1) * bound
        params += [w.requires_grad_(), b.requires_grad_()]

    def forward(z: Any) -> Any:
        h = z.unsqueeze(0).expand(m, -1, -1)
        for i in range(0, len(params), 2):
            h = torch.baddbmm(params[i + 1].unsqueeze(1), h, params[i])
            if i + 2 < len(params):
                h = torch.tanh(h)
        return h[..., 0]                        # (M, n)

    def loss_of(zc: Any, zr: Any) -> Any:
        return torch.nn.functional.softplus(forward(zr) - forward(zc)).mean(dim=1)

    opt = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.epochs)
    zc, zr = tensors(train)
    vc, vr = tensors(val)
    best = (np.full(m, np.inf), [p.detach().clone() for p in params])
    stale, epochs = 0, 0
    for epoch in range(config.epochs):
        order = torch.randperm(len(zc), generator=gen)
        for start in range(0, len(order), config.batch_size):
            idx = order[start:start + config.batch_size]
            opt.zero_grad()
            loss_of(zc[idx], zr[idx]).sum().backward()
            opt.step()
        sched.step()
        epochs = epoch + 1
        with torch.no_grad():
            v = loss_of(vc, vr).numpy()
        better = v < best[0] - 1e-5
        if better.any():
            for kept, p in zip(best[1], params):
                kept[better] = p.detach()[better]
            best[0][better] = v[better]
            stale = 0
        else:
            stale += 1
            if stale >= config.patience:
                break
    layers = [(best[1][i].numpy(), best[1][i + 1].numpy()) for i in range(0, len(params), 2)]
    meta = {"trainer": "agents.learners.bradley_terry", "config": asdict(config),
            "seed": int(seed), "pairs_train": len(train), "pairs_validation": len(val),
            "epochs_run": epochs, "validation_loss": best[0].tolist()}
    return RewardModel(layers, x_mean, x_std, pairs.num_actions, meta)
