"""The D step and the G step captured as two CUDA graphs (the trainer's fast path on CUDA).

A mixin of `Trainer`: it replays the trainer's own `_d_update` / `_g_update`, captured once,
so everything those do per step (spectral-norm power iterations, the EMA update, the LR read
from device tensors) is replayed too.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .config import RunConfig


class GraphSteps:
    """`_graph_step()` runs one generator step (with its n_dis D steps) from the graphs,
    capturing them on first use."""

    cfg: RunConfig
    device: torch.device
    netG: nn.Module
    netD: nn.Module
    ema_G: nn.Module | None
    optG: torch.optim.Optimizer
    optD: torch.optim.Optimizer
    _graphs: tuple[Any, ...] | None

    def _d_update(self) -> torch.Tensor:
        raise NotImplementedError

    def _g_update(self) -> torch.Tensor:
        raise NotImplementedError

    def _graph_step(self) -> torch.Tensor:
        if self._graphs is None:
            self._graphs = self._capture()
        graph_d, graph_g, static_d, static_g = self._graphs
        for _ in range(self.cfg.train.n_dis):
            graph_d.replay()
        graph_g.replay()
        return torch.stack([static_d[0], static_g, static_d[1], static_d[2]])

    def _capture(self) -> tuple[torch.cuda.CUDAGraph, torch.cuda.CUDAGraph, Any, Any]:
        """Capture the whole D update and G update as two CUDA graphs.

        Warm-up iterations run on a side stream first (as capture requires), then every
        weight, buffer and optimizer state is restored, so the warm-up changes nothing. Noise
        and batch indices are drawn inside the graphs (graph-safe RNG), the power iterations
        update u in place on every replay, and the LR is read from device tensors.
        """
        snapshot = self._snapshot()
        rng = torch.cuda.get_rng_state(self.device)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                self.netD.requires_grad_(True)
                self._d_update()
                self.netD.requires_grad_(False)
                self._g_update()
        torch.cuda.current_stream().wait_stream(side)
        self._restore(snapshot)
        # replays draw from the generator's offset like eager calls do: with the warm-up's
        # draws undone, the graphs see exactly the noise and batches the eager loop would
        torch.cuda.set_rng_state(rng, self.device)

        self.optD.zero_grad(set_to_none=True)  # backward allocates grads from the graph pool
        self.optG.zero_grad(set_to_none=True)
        graph_d, graph_g = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
        self.netD.requires_grad_(True)
        with torch.cuda.graph(graph_d):
            static_d = self._d_update()
        self.netD.requires_grad_(False)
        with torch.cuda.graph(graph_g, pool=graph_d.pool()):
            static_g = self._g_update()
        return graph_d, graph_g, static_d, static_g

    def _state_tensors(self) -> list[torch.Tensor]:
        nets = [self.netG, self.netD] + ([self.ema_G] if self.ema_G is not None else [])
        out = [t for net in nets for t in (*net.parameters(), *net.buffers())]
        for opt in (self.optG, self.optD):
            for st in opt.state.values():
                out.extend(v for v in st.values() if isinstance(v, torch.Tensor))
        return out

    def _snapshot(self) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        return {id(t): (t, t.detach().clone()) for t in self._state_tensors()}

    @torch.no_grad()
    def _restore(self, snapshot: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> None:
        for t in self._state_tensors():
            if id(t) in snapshot:
                t.copy_(snapshot[id(t)][1])
            else:  # optimizer state first created by the warm-up: a fresh Adam state is zero
                t.zero_()
