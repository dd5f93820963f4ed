"""Networks of the PIS-style architecture used by the paper.

Time enters through Fourier features ``sin/cos(freq * t + phase)`` (64 harmonics, frequencies spread
over [0.1, 100], a learned phase) followed by an MLP. Every network here takes a precomputed *time
embedding* rather than raw times: a batch of trajectories on a shared time grid has only T distinct
times, so the embedding is computed once per time and broadcast over the batch.

For a conditional target a network also embeds the condition (an MLP of the flattened image, computed
once per trajectory) and adds it to the time embedding: the "time embedding" a network receives is
then the per-trajectory context ``embed_time(t) + embed_condition(c)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FourierTimeEmbedding(nn.Module):
    """``t -> MLP([sin(f t + phi), cos(f t + phi)])`` with ``harmonics`` frequencies in [0.1, 100]."""

    def __init__(self, harmonics: int = 64, hidden_dim: int = 64, out_dim: int = 64):
        super().__init__()
        self.register_buffer("freqs", torch.linspace(0.1, 100.0, harmonics))
        self.phase = nn.Parameter(torch.randn(harmonics))
        self.mlp = nn.Sequential(nn.Linear(2 * harmonics, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` of shape ``(...,)`` -> embedding ``(..., out_dim)``."""
        arg = t.unsqueeze(-1) * self.freqs + self.phase
        return self.mlp(torch.cat([arg.sin(), arg.cos()], dim=-1))


def condition_mlp(cond_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """A GELU MLP ``cond_dim -> hidden -> hidden -> out_dim`` embedding a (flattened) condition."""
    return nn.Sequential(
        nn.Linear(cond_dim, hidden_dim),
        nn.GELU(),
        nn.Linear(hidden_dim, hidden_dim),
        nn.GELU(),
        nn.Linear(hidden_dim, out_dim),
    )


def _zero_(layer: nn.Linear, bias: float = 0.0) -> nn.Linear:
    nn.init.zeros_(layer.weight)
    nn.init.constant_(layer.bias, bias)
    return layer


class JointNet(nn.Module):
    """``(x, t) -> out``: a linear state encoder, summed with a time embedding, then a GELU MLP.

    Used for the policy (``out_dim = 2 d``: drift and log-variance, zero-initialised last layer), the
    conditional log-flow (``out_dim = 1``) and the backward-kernel correction (``out_dim = 2 d``).
    With ``cond_dim`` it also has a condition embedding (``embed_condition``), added to the time embedding.
    """

    def __init__(
        self,
        dim: int,
        out_dim: int,
        hidden_dim: int = 64,
        harmonics: int = 64,
        joint_layers: int = 2,
        zero_init: bool = True,
        cond_dim: int | None = None,
    ):
        super().__init__()
        self.state_encoder = nn.Linear(dim, hidden_dim)
        self.time_embedding = FourierTimeEmbedding(harmonics, hidden_dim, hidden_dim)
        self.condition_embedding = condition_mlp(cond_dim, hidden_dim, hidden_dim) if cond_dim else None
        layers: list[nn.Module] = [nn.GELU()]
        for _ in range(joint_layers):
            layers += [nn.Linear(hidden_dim, hidden_dim), nn.GELU()]
        last = nn.Linear(hidden_dim, out_dim)
        layers.append(_zero_(last) if zero_init else last)
        self.joint = nn.Sequential(*layers)
        self._linears = tuple(self.joint[1:-1:2])  # the hidden Linear layers (not registered twice)

    def embed_time(self, t: torch.Tensor) -> torch.Tensor:
        """Time embedding with the state encoder's bias folded in: ``(..., hidden)``."""
        return self.time_embedding(t) + self.state_encoder.bias

    def embed_condition(self, condition: torch.Tensor) -> torch.Tensor:
        """``(B, hidden)`` condition embeddings, to add to ``embed_time`` outputs (conditional nets only)."""
        return self.condition_embedding(condition)

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        """``x`` ``(..., d)`` and an ``embed_time`` output (plus a condition embedding, if any)
        broadcastable to ``(..., hidden)``. The ops of ``self.joint``, called directly (no module dispatch)."""
        last = self.last
        return F.linear(self._joint_hidden(self._encode(x, t_emb)), last.weight, last.bias)

    def _joint_hidden(self, h: torch.Tensor) -> torch.Tensor:
        """``self.joint[:-1](h)``: GELU, then (Linear, GELU) per hidden layer."""
        h = F.gelu(h)
        for layer in self._linears:
            h = F.gelu(F.linear(h, layer.weight, layer.bias))
        return h

    def hidden(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        """The features ``(..., hidden)`` the last layer (``self.last``) maps to the output."""
        return self._joint_hidden(self._encode(x, t_emb))

    @property
    def last(self) -> nn.Linear:
        return self.joint[-1]

    # --- a rollout's forward passes, recorded and replayed (``ActivationRecord``) --------------------------

    def forward_recorded(self, x: torch.Tensor, t_emb: torch.Tensor, record: ActivationRecord, step: int):
        """``forward`` of one sampling step (``x`` (n, d)), writing its pre-activations and activations into
        ``record`` at ``step``: the same operations as ``forward``, so the same values."""
        if step == 0:
            record.start(self, x)
        z, a, weights = record.z_steps, record.a_steps, record.weights
        h = torch.addmm(t_emb, x, weights[0], out=z[0][step])
        for i, (bias, w_t) in enumerate(zip(record.biases, weights[1:])):
            h = torch.addmm(bias, _gelu_into(h, a[i][step]), w_t, out=z[i + 1][step])
        return torch.addmm(self.last.bias, _gelu_into(h, a[-1][step]), weights[-1])

    def hidden_replayed(self, x: torch.Tensor, t_emb: torch.Tensor, record: ActivationRecord | None):
        """``hidden(x, t_emb)`` of whole paths ``x`` (B, T, d) from a rollout's ``record`` when it holds them
        (the same batch, and the parameters unchanged since), else computed. Replayed, the forward pass
        costs nothing and the backward pass is ``RecordedHidden``'s."""
        if record is None or not record.matches(self, x):
            return self.hidden(x, t_emb)
        return self._replay(x.transpose(0, 1), _time_major_embedding(t_emb), record).transpose(0, 1)

    def hidden_time_major(self, x: torch.Tensor, t_emb: torch.Tensor, record: ActivationRecord | None):
        """``hidden`` of whole paths, time-major: ``(T, B, hidden)``, the states ``(T + 1, B, d)`` the record
        kept of the rollout whose paths ``x`` (B, T, d) are and their residuals (or None), or None when ``record``
        cannot replay ``x``. The rows of the replay's products are in the order the rollout wrote them."""
        if record is None or not record.matches(self, x):
            return None
        states = record.time_major_states(x)
        return self._replay(states[:-1], _time_major_embedding(t_emb), record), states, record.residuals

    def _replay(self, x_tm: torch.Tensor, emb: torch.Tensor, record: ActivationRecord) -> torch.Tensor:
        params = [self.state_encoder.weight] + [p for layer in self._linears for p in (layer.weight, layer.bias)]
        return RecordedHidden.apply(x_tm, emb, record.z, record.a, *params)

    def forward_replayed(self, x: torch.Tensor, t_emb: torch.Tensor, record: ActivationRecord | None):
        """``forward`` of whole paths, replayed from ``record`` where it can be (see ``hidden_replayed``)."""
        if record is None or not record.matches(self, x):
            return self.forward(x, t_emb)
        return self.last(self.hidden_replayed(x, t_emb, record))

    def _encode(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        w = self.state_encoder.weight
        if x.dim() == 2 and t_emb.dim() <= 2:
            return torch.addmm(t_emb, x, w.t())  # one fused op per sampling step
        return torch.nn.functional.linear(x, w) + t_emb


def _versions(module: nn.Module) -> tuple[int, ...]:
    return tuple(p._version for p in module.parameters())


def _gelu_into(h: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``F.gelu(h)`` written into ``out`` (the same kernel, so the same values)."""
    return torch._C._nn.gelu(h, out=out)


class ActivationRecord:
    """The pre-activations ``z[i]`` and activations ``a[i] = gelu(z[i])`` (T, n, hidden) of a ``JointNet``'s layers
    over a rollout, time-major, and the rollout's time-major states.

    A training step samples paths without autograd, then evaluates the same network at the same states
    with autograd to score them: replaying the record (``JointNet.hidden_replayed``, ``hidden_time_major``)
    saves that second forward pass and its activation functions. A record is used only for the states it was
    made on (the same tensor, unchanged: its storage, strides and version counter) and while the parameters
    are unchanged (their version counters, which every in-place update bumps).
    During the rollout it also holds the transposed weights (``start``), so a step does no view bookkeeping."""

    def __init__(self, num_steps: int):
        self.num_steps = num_steps
        self.z: list[torch.Tensor] | None = None
        self.a: list[torch.Tensor] | None = None
        self.versions: tuple[int, ...] | None = None
        self.states: torch.Tensor | None = None
        self.residuals: torch.Tensor | None = None
        self._states_key = None
        self.z_steps: list = []
        self.a_steps: list = []
        self.weights: list[torch.Tensor] = []
        self.biases: list[torch.Tensor] = []

    def start(self, net: JointNet, x: torch.Tensor) -> None:
        """Before step 0: the slots for ``x`` (n, d), the parameters' versions and the transposed weights."""
        n, hidden, layers = x.shape[0], net.last.in_features, len(net._linears) + 1
        if self.z is None or self.z[0].shape[1] != n:
            self.z = [x.new_empty(self.num_steps, n, hidden) for _ in range(layers)]
            self.a = [x.new_empty(self.num_steps, n, hidden) for _ in range(layers)]
        self.z_steps, self.a_steps = [z.unbind(0) for z in self.z], [a.unbind(0) for a in self.a]  # per-step views
        self.versions = _versions(net)
        linears = (net.state_encoder, *net._linears, net.last)
        self.weights = [layer.weight.t() for layer in linears]
        self.biases = [layer.bias for layer in net._linears]

    def keep_states(self, time_major: torch.Tensor, batch_major: torch.Tensor, residuals=None) -> None:
        """The rollout's states, time-major ``(T + 1, n, d)``, as the paths' ``batch_major`` (n, T + 1, d)
        copy of them: ``time_major_states`` gives them back for that tensor while it is unchanged.
        ``residuals``: ``x_{k+1} - mean_k`` of every step (T, n, d) (the rollout's scaled noise), or None."""
        self.states, self.residuals = time_major, residuals
        self._states_key = _tensor_key(batch_major)

    def time_major_states(self, x: torch.Tensor) -> torch.Tensor | None:
        """``(T + 1, n, d)``: the kept states, when ``x`` is the paths' states or ``[:, :-1]`` of them (same
        storage, strides and version), else None."""
        if self.states is None or _tensor_key(x) != self._states_key:
            return None
        return self.states

    def matches(self, net: nn.Module, x: torch.Tensor) -> bool:
        """Whether the record describes ``net`` at ``x``: the rollout's own states (unchanged since) and the
        parameters it ran with."""
        return (
            self.z is not None
            and tuple(x.shape[:2]) == (self.z[0].shape[1], self.num_steps)
            and self.versions == _versions(net)
            and self.time_major_states(x) is not None
        )


def _time_major_embedding(t_emb: torch.Tensor) -> torch.Tensor:
    """An embedding of whole paths, ``(T, hidden)`` or per path ``(B, T, hidden)``, broadcastable to (T, B, hidden)."""
    return t_emb.unsqueeze(1) if t_emb.dim() == 2 else t_emb.transpose(0, 1)


def _tensor_key(x: torch.Tensor) -> tuple:
    return x.data_ptr(), x.stride(), x._version


class RecordedHidden(torch.autograd.Function):
    """``JointNet.hidden`` of whole paths from a record, time-major: ``x`` (T, B, d), the embedding (T, hidden)
    or (T, B, hidden), ``z`` and ``a`` the recorded pre-activations and activations (T, B, hidden). The forward
    pass reads them, the backward pass is the one autograd would run (GELU and linear backward, batched over
    all T B rows, in the record's row order)."""

    @staticmethod
    def forward(ctx, x, t_emb, z, a, w_enc, *layer_params):
        ctx.save_for_backward(x, *layer_params, *z, *a)
        ctx.n_layers, ctx.emb_shape = len(layer_params) // 2, t_emb.shape
        return a[-1].detach()

    @staticmethod
    def backward(ctx, grad):
        saved, n = ctx.saved_tensors, ctx.n_layers
        x, params = saved[0], saved[1 : 1 + 2 * n]
        zs, acts = saved[1 + 2 * n : 2 + 3 * n], saved[2 + 3 * n :]
        h = zs[0].shape[-1]
        g = torch.ops.aten.gelu_backward(grad, zs[-1])
        layer_grads: list = []
        for i in range(n, 0, -1):  # z_i = a_{i-1} W_i^T + b_i
            w = params[2 * (i - 1)]
            g2 = g.reshape(-1, h)
            layer_grads = [g2.t().mm(acts[i - 1].reshape(-1, h)), g2.sum(0)] + layer_grads
            g = torch.ops.aten.gelu_backward(g.matmul(w), zs[i - 1])
        grad_w_enc = g.reshape(-1, h).t().mm(x.reshape(-1, x.shape[-1]))
        grad_emb = g.sum_to_size(ctx.emb_shape) if ctx.needs_input_grad[1] else None
        return (None, grad_emb, None, None, grad_w_enc, *layer_grads)


class LangevinScaleNet(nn.Module):
    """``t -> scale(t)`` multiplying the clipped score in the Langevin parametrisation.

    Output per dimension (``out_dim = d``) or scalar (``out_dim = 1``); the last layer has zero weights
    and bias ``init`` (0.01: training starts from a small multiple of the score).
    """

    def __init__(self, out_dim: int = 1, hidden_dim: int = 64, harmonics: int = 64, layers: int = 3, init=0.01):
        super().__init__()
        self.register_buffer("freqs", torch.linspace(0.1, 100.0, harmonics))
        self.phase = nn.Parameter(torch.randn(harmonics))
        mods: list[nn.Module] = [nn.Linear(2 * harmonics, hidden_dim)]
        for _ in range(layers - 1):
            mods += [nn.GELU(), nn.Linear(hidden_dim, hidden_dim)]
        mods += [nn.GELU(), _zero_(nn.Linear(hidden_dim, out_dim), bias=init)]
        self.mlp = nn.Sequential(*mods)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        arg = t.unsqueeze(-1) * self.freqs + self.phase
        return self.mlp(torch.cat([arg.sin(), arg.cos()], dim=-1))


class LogZ(nn.Module):
    """A scalar learned log-partition function (the initial flow of trajectory balance)."""

    def __init__(self, init: float = 0.0):
        super().__init__()
        self.value = nn.Parameter(torch.tensor(float(init)))

    def forward(self) -> torch.Tensor:
        return self.value


class ConditionalLogZ(nn.Module):
    """``c -> log Z(c)``: the learned log-partition function of a conditional target, an MLP of the condition."""

    def __init__(self, cond_dim: int, hidden_dim: int = 64):
        super().__init__()
        self.mlp = condition_mlp(cond_dim, hidden_dim, 1)

    def forward(self, condition: torch.Tensor) -> torch.Tensor:
        """``(B, cond_dim) -> (B,)``."""
        return self.mlp(condition).squeeze(-1)


def _mlp(config, target, dim: int, out_scale: int, cond_dim) -> JointNet:
    return JointNet(dim, out_scale * dim, config.hidden_dim, config.harmonics, config.joint_layers, True, cond_dim)


def _egnn(config, target, dim: int, out_scale: int, cond_dim):
    from diffsampler.agents.egnn import particle_network

    return particle_network(target, config.egnn_hidden, config.harmonics, config.egnn_layers, out_scale, cond_dim)


# ``PolicyConfig.network`` -> (policy config, target, dim, out_scale, cond_dim) -> the drift network, with
# JointNet's interface (out_scale 1: the drift; 2: drift and log-variance).
NETWORKS = {"mlp": _mlp, "egnn": _egnn}
