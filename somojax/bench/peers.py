"""The PyTorch peers, measured in the same run as somojax (torch is imported lazily).

- `RegionalEALSTM`: an EA-LSTM written the way ealstm_regional (Kratzert et al. 2019) and SoMo.ml v1
  write it — `weight_ih [D, 3H]`, `weight_hh [H, 3H]`, `weight_sh [S, H]`, `bias`, `bias_s`, a Python
  loop over time steps, dropout on the last hidden state, `fc = Linear(H, 1)`. Same equations as
  docs/design.md#model (tested against `somojax.models.ealstm.forward`).
- Its training step: forward, NSE*-style loss, backward, `clip_grad_norm_(1.0)`, Adam.
- Its sliding-window inference as the released SoMo.ml code does it: every output day's 365-day
  window materialised, batches of 1024 windows, one forward pass each.
- neuralhydrology's `EALSTM` (PyPI): training step and forward on identical shapes.

Install: `pip install torch==2.13.0` (CPU wheel) and `pip install 'somojax[peer]'`.

The peers run on the device JAX runs on: CUDA when JAX's backend is a GPU and torch sees one,
else the CPU (`SOMOJAX_PEER_DEVICE=cpu|cuda` overrides). Every peer call ends by copying a result
to the host, so its time includes the device work.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping

import numpy as np

from somojax.utils.devices import usable_cores


def _torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("the PyTorch peers need torch: pip install torch (CPU: pip install torch==2.13.0)") from e
    torch.set_num_threads(usable_cores())
    return torch


def peer_device() -> str:
    """ "cuda" when JAX computes on a GPU and torch has CUDA, else "cpu" (env SOMOJAX_PEER_DEVICE wins)."""
    forced = os.environ.get("SOMOJAX_PEER_DEVICE")
    if forced:
        return forced
    import jax

    torch = _torch()
    return "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"


def regional_model(n_dynamic: int, n_static: int, hidden: int, dropout: float = 0.5, seed: int = 0):
    """An ealstm_regional-style EA-LSTM + head, randomly initialised (orthogonal / identity as there)."""
    torch = _torch()
    from torch import nn

    class EALSTM(nn.Module):
        def __init__(self):
            super().__init__()
            self.hidden_size = hidden
            self.weight_ih = nn.Parameter(torch.empty(n_dynamic, 3 * hidden))
            self.weight_hh = nn.Parameter(torch.empty(hidden, 3 * hidden))
            self.weight_sh = nn.Parameter(torch.empty(n_static, hidden))
            self.bias = nn.Parameter(torch.zeros(3 * hidden))
            self.bias_s = nn.Parameter(torch.zeros(hidden))
            nn.init.orthogonal_(self.weight_ih.data)
            nn.init.orthogonal_(self.weight_sh.data)
            self.weight_hh.data = torch.eye(hidden).repeat(1, 3)
            self.bias.data[:hidden] = 5.0

        def forward(self, x_d, x_s):
            x_d = x_d.transpose(0, 1)  # batch_first -> [T, B, D]
            seq_len, batch, _ = x_d.size()
            h = x_d.new_zeros(batch, self.hidden_size)
            c = x_d.new_zeros(batch, self.hidden_size)
            bias = self.bias.unsqueeze(0).expand(batch, -1)
            i = torch.sigmoid(torch.addmm(self.bias_s.unsqueeze(0).expand(batch, -1), x_s, self.weight_sh))
            for t in range(seq_len):
                gates = torch.addmm(bias, h, self.weight_hh) + torch.mm(x_d[t], self.weight_ih)
                f, o, g = gates.chunk(3, 1)
                c = torch.sigmoid(f) * c + i * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
            return h

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = EALSTM()
            self.dropout = nn.Dropout(p=dropout)
            self.fc = nn.Linear(hidden, 1)

        def forward(self, x_d, x_s):
            return self.fc(self.dropout(self.lstm(x_d, x_s)))

    torch.manual_seed(seed)
    return Model()


def load_params(model, params: Mapping[str, np.ndarray]) -> None:
    """Copies one somojax member's parameters into a `regional_model` (the SoMo.ml v1 layout)."""
    torch = _torch()
    with torch.no_grad():
        model.lstm.weight_ih.copy_(torch.as_tensor(np.asarray(params["W_ih"])))
        model.lstm.weight_hh.copy_(torch.as_tensor(np.asarray(params["W_hh"])))
        model.lstm.weight_sh.copy_(torch.as_tensor(np.asarray(params["W_sh"])))
        model.lstm.bias.copy_(torch.as_tensor(np.asarray(params["b"])))
        model.lstm.bias_s.copy_(torch.as_tensor(np.asarray(params["b_s"])))
        model.fc.weight.copy_(torch.as_tensor(np.asarray(params["W_fc"]).T))
        model.fc.bias.copy_(torch.as_tensor(np.asarray(params["b_fc"])))


def regional_train_step(batch: int, days: int, n_dynamic: int, n_static: int, hidden: int) -> Callable[[], Any]:
    """One ealstm_regional training step (NSE* loss, clipping, Adam) on random data, as a closure."""
    torch = _torch()
    dev = peer_device()
    model = regional_model(n_dynamic, n_static, hidden).to(dev)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    x_d = torch.randn(batch, days, n_dynamic, generator=g).to(dev)
    x_s = torch.randn(batch, n_static, generator=g).to(dev)
    y = torch.randn(batch, 1, generator=g).to(dev)
    sigma = torch.rand(batch, 1, generator=g).to(dev)

    def step():
        opt.zero_grad()
        loss = (((model(x_d, x_s) - y) ** 2) / (sigma + 0.1) ** 2).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.detach().item()

    return step


def regional_sliding_inference(
    days: int, seq_length: int, n_dynamic: int, n_static: int, hidden: int, batch: int = 1024
) -> Callable[[], Any]:
    """SoMo.ml-style inference of one cell: every day's window materialised, 1024 per batch."""
    torch = _torch()
    dev = peer_device()
    model = regional_model(n_dynamic, n_static, hidden).to(dev).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(days + seq_length - 1, n_dynamic, generator=g).to(dev)
    x_s = torch.randn(1, n_static, generator=g).to(dev)

    def run():
        out = []
        with torch.no_grad():
            windows = x.unfold(0, seq_length, 1).permute(0, 2, 1).contiguous()  # [days, L, D]
            for b0 in range(0, days, batch):
                xb = windows[b0 : b0 + batch]
                out.append(model(xb, x_s.expand(xb.shape[0], -1)))
        return torch.cat(out).cpu().numpy()

    return run


def neuralhydrology_model(n_dynamic: int, n_static: int, hidden: int, seq_length: int, dropout: float = 0.5):
    """neuralhydrology's EALSTM (PyPI) built from a minimal in-memory config."""
    _torch()
    from neuralhydrology.modelzoo.ealstm import EALSTM
    from neuralhydrology.utils.config import Config

    dyn = [f"x{i}" for i in range(n_dynamic)]
    cfg = Config(
        {
            "model": "ealstm",
            "hidden_size": hidden,
            "initial_forget_bias": 5.0,
            "output_dropout": dropout,
            "output_activation": "linear",
            "head": "regression",
            "dynamic_inputs": dyn,
            "static_attributes": [f"s{i}" for i in range(n_static)],
            "target_variables": ["sm"],
            "seq_length": seq_length,
            "predict_last_n": 1,
            "experiment_name": "somojax-peer",
        }
    )
    return EALSTM(cfg), dyn


def load_neuralhydrology_params(model, params: Mapping[str, np.ndarray]) -> None:
    """Copies one somojax member's parameters into neuralhydrology's EALSTM (same equations)."""
    torch = _torch()
    t = lambda k: torch.as_tensor(np.asarray(params[k], np.float32))  # noqa: E731
    with torch.no_grad():
        model.input_gate.weight.copy_(t("W_sh").T)
        model.input_gate.bias.copy_(t("b_s"))
        model.dynamic_gates.weight_ih.copy_(t("W_ih"))
        model.dynamic_gates.weight_hh.copy_(t("W_hh"))
        model.dynamic_gates.bias.copy_(t("b"))
        model.head.net[0].weight.copy_(t("W_fc").T)
        model.head.net[0].bias.copy_(t("b_fc"))


def neuralhydrology_inputs(x_d: np.ndarray, x_s: np.ndarray, names: list[str]) -> dict:
    """neuralhydrology's input dict: one [B, T, 1] tensor per dynamic input, statics [B, S]."""
    torch = _torch()
    return {
        "x_d": {k: torch.as_tensor(np.ascontiguousarray(x_d[..., i : i + 1], np.float32)) for i, k in enumerate(names)},
        "x_s": torch.as_tensor(np.asarray(x_s, np.float32)),
    }


def neuralhydrology_steps(
    batch: int, days: int, n_dynamic: int, n_static: int, hidden: int
) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """(training step, forward pass) of neuralhydrology's EALSTM on random data."""
    torch = _torch()
    dev = peer_device()
    model, dyn = neuralhydrology_model(n_dynamic, n_static, hidden, days)
    model = model.to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    data = {
        "x_d": {k: torch.randn(batch, days, 1, generator=g).to(dev) for k in dyn},
        "x_s": torch.randn(batch, n_static, generator=g).to(dev),
    }
    y = torch.randn(batch, 1, generator=g).to(dev)
    sigma = torch.rand(batch, 1, generator=g).to(dev)

    def train():
        model.train()
        opt.zero_grad()
        pred = model(data)["y_hat"][:, -1, :]
        loss = (((pred - y) ** 2) / (sigma + 0.1) ** 2).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.detach().item()

    def forward():
        model.eval()
        with torch.no_grad():
            return model(data)["y_hat"][:, -1, :].cpu().numpy()

    return train, forward
