"""The 1F1B pipeline schedule: warm-up forwards, then one forward and one backward in turn, then cool-down backwards.

Stage s of p first runs p - s - 1 forwards (at most m, the micro-batches), so the last stage starts backward as
soon as its first forward is done; from then on every stage alternates, holding at most p - s micro-batches'
activations; the last backwards drain the pipeline. Idle time per stage is (p - 1) x (forward + backward), so the
bubble share is (p - 1) / (m + p - 1), against (p - 1) / p when every micro-batch goes through all stages alone.

On GPU the trainer runs Megatron-core's own non-interleaved schedule (`megatron_1f1b`); its point-to-point code
hard-codes CUDA, so on CPU (tests over gloo) `run_1f1b` runs the same order of operations with blocking receives
and asynchronous sends. Every stage knows each micro-batch's token count from the packed file, so messages carry
no shapes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist


def one_f_one_b(stage: int, stages: int, micro_batches: int) -> list[tuple[str, int]]:
    """The operations of `stage` in order: ("F", i) forward or ("B", i) backward of micro-batch i."""
    warmup = min(stages - stage - 1, micro_batches)
    order = [("F", i) for i in range(warmup)]
    for i in range(warmup, micro_batches):
        order += [("F", i), ("B", i - warmup)]
    return order + [("B", i) for i in range(micro_batches - warmup, micro_batches)]


def bubble_share(stages: int, micro_batches: int) -> float:
    return (stages - 1) / (micro_batches + stages - 1)


@dataclass(frozen=True)
class StageLinks:
    """This rank's place in its pipeline: its stage, and the global ranks of the previous and next stage."""

    stage: int
    stages: int
    previous: int
    next: int

    @property
    def first(self) -> bool:
        return self.stage == 0

    @property
    def last(self) -> bool:
        return self.stage == self.stages - 1


@dataclass
class Timeline:
    """Compute intervals of one stage (waits for messages excluded): the measured side of the bubble."""

    spans: list[tuple[str, int, float, float]] = field(default_factory=list)

    def busy(self) -> float:
        return sum(end - start for _, _, start, end in self.spans)


StageForward = Callable[[int, torch.Tensor | None], torch.Tensor]
"""(micro-batch index, received activations or None on the first stage) -> this stage's output."""
StageLoss = Callable[[int, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""(micro-batch index, last stage's output) -> (scalar to backpropagate, loss to report)."""


def run_1f1b(links: StageLinks, shapes: Sequence[tuple[int, ...]], forward: StageForward, loss_of: StageLoss,
             device: torch.device, timeline: Timeline | None = None) -> torch.Tensor:
    """Forward and backward of every micro-batch (`shapes[i]`: activations passed between stages) in 1F1B order.

    Returns the summed reported loss on the last stage, 0 elsewhere.
    """
    received: dict[int, torch.Tensor | None] = {}
    outputs: dict[int, torch.Tensor] = {}
    in_flight: list[tuple[Any, torch.Tensor]] = []
    reported = torch.zeros((), device=device)

    def record(kind: str, index: int, start: float) -> None:
        if timeline is not None:
            timeline.spans.append((kind, index, start, time.perf_counter()))

    def send(tensor: torch.Tensor, dst: int) -> None:
        message = tensor.detach().float().contiguous()
        in_flight.append((dist.isend(message, dst=dst), message))

    for kind, index in one_f_one_b(links.stage, links.stages, len(shapes)):
        if kind == "F":
            activations = None
            if not links.first:
                activations = torch.empty(shapes[index], device=device, dtype=torch.float32)
                dist.recv(activations, src=links.previous)
                activations.requires_grad_(True)
            received[index] = activations
            start = time.perf_counter()
            output = forward(index, activations)
            if links.last:
                outputs[index], loss = loss_of(index, output)
                reported += loss.detach()
            else:
                outputs[index] = output
            record("F", index, start)
            if not links.last:
                send(output, links.next)
            continue
        output = outputs.pop(index)
        grad = None
        if not links.last:
            grad = torch.empty(output.shape, device=device, dtype=torch.float32)
            dist.recv(grad, src=links.next)
            grad = grad.to(output.dtype)
        start = time.perf_counter()
        torch.autograd.backward(output, grad_tensors=grad)
        record("B", index, start)
        activations = received.pop(index)
        if activations is not None:
            assert activations.grad is not None
            send(activations.grad, links.previous)
    for work, _ in in_flight:
        work.wait()
    return reported


def megatron_1f1b(model: torch.nn.Module, batches: Sequence[Any], seq_length: int,
                  run_stage: Callable[[Any], torch.Tensor], loss_of: Callable[[Any, torch.Tensor], torch.Tensor],
                  scale: float) -> torch.Tensor:
    """Megatron-core's non-interleaved 1F1B schedule (GPU): `run_stage(batch)` runs this stage (Megatron sets the
    received activations as the model's input tensor), `loss_of(batch, output)` is the weighted loss sum, which is
    backpropagated divided by `scale`. Returns the summed weighted loss on the last stage, 0 elsewhere."""
    from megatron.core.pipeline_parallel import get_forward_backward_func

    reported: list[torch.Tensor] = []
    count = len(batches)

    def forward_step(data_iterator: Any, stage_model: Any) -> tuple[torch.Tensor, Callable[..., Any]]:
        batch = next(data_iterator)
        output = run_stage(batch)

        def loss_func(output_tensor: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
            weighted = loss_of(batch, output_tensor)
            reported.append(weighted.detach())
            return weighted / scale * count, {}  # the schedule divides by the micro-batch count

        return output, loss_func

    get_forward_backward_func()(forward_step_func=forward_step, data_iterator=iter(batches), model=model,
                                num_microbatches=count, seq_length=seq_length, micro_batch_size=1,
                                forward_only=False)
    device = next(model.parameters()).device
    return torch.stack(reported).sum() if reported else torch.zeros((), device=device)
