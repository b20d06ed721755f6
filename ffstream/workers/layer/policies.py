"""Step policies: when a layer worker takes its optimiser steps, and on which negatives.

One is chosen when the worker is built (`choose`) and stays: nothing on the frame path tests a flag for it.

| policy        | negative inputs, on arrival              | a positive micro-batch                                   |
| ------------- | ---------------------------------------- | -------------------------------------------------------- |
| Immediate     | join the next step (pending in the layer) | steps at once                                            |
| Phased        | step on their own, at once (phased sleep) | steps at once                                            |
| Paired        | wait for their positives (pairing.py)     | steps with the negatives of the same frames, or is held  |
| ForwardFirst  | as Paired                                 | as Paired, but forwarded and held while more frames wait; the ready ones step merged |
| Scheduled     | wait; the schedule steps                  | forwarded and held; one merged step per learn_every_rows or learn_every_ms |
| Frozen        | dropped (a frozen run has no sleep worker) | forwarded, never stepped (model.freeze: inference only)  |

Chaining (sleep.route "chain") is no policy of its own: it is where a paired step's negative activity goes (the
worker's negative output, see stepping.py), so Paired, ForwardFirst and Scheduled steps all chain when it is set.

A scheduled step forwards the frames that arrive while it runs, between its passes (`between`), through the worker's
forward-only intake, which holds their rows and never steps: a step cannot start inside another.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from ffstream.config.plans import LIVE_MAX_HELD, Batching
from ffstream.net.transport import POLL_MS
from ffstream.workers.pairing import Pairing, merged

if TYPE_CHECKING:
    from ffstream.workers.layer.worker import LayerWorker

END_PAIRING_WAIT_S = 2.0  # at the end of a stream, how long held rows wait for their negatives before the end goes on

Negatives = list[tuple[int, torch.Tensor]]  # (source seq, negative inputs (B, D)) of one step
PassOn = Callable[[torch.Tensor], None]  # sends a micro-batch's activity h (B, N) on, before any backward pass


class Immediate:
    """Every positive micro-batch steps at once; negative inputs join the next step (the interleaved reference's
    order when negatives arrive before their positives, and the only order without the sleep worker)."""

    pairing: Pairing | None = None  # positives waiting for their negatives; None: nothing is held
    negative_burst = 0  # negative messages taken at once after one arrives, beyond it

    def __init__(self, worker: LayerWorker):
        self.worker = worker  # its layer, its step (learn_step) and its sockets' non-blocking reads

    def learn(self, x: torch.Tensor, labels: torch.Tensor | None, seqs: list[int], pass_on: PassOn) -> dict[str, float]:
        """A positive micro-batch x (B, D) of the source batches `seqs`: step on it or hold it; its stats either way."""
        stats, _ = self.worker.stepper.step(x, [], labels, on_forward=pass_on)
        return stats

    def on_negative(self, seq: int, inputs: torch.Tensor) -> None:
        """Negative inputs (B, D) made from source batch `seq` (by the sleep worker, or chained by the layer below)."""
        self.worker.layer.add_negative_inputs(inputs)

    def idle(self) -> None:
        """No frame for IDLE_WAKE_S: let nothing wait past its deadline."""

    def tick(self) -> None:
        """Once per turn of the worker's loop, after its reads."""

    def before_end(self) -> None:
        """The end-of-stream marker is here; it goes on (to the layer above) when this returns."""

    def drain(self) -> None:
        """The worker stops: step what is held."""

    def metrics(self) -> dict[str, Any]:
        keys = ("paired", "unpaired_positives", "unpaired_negatives")
        return {k: None if self.pairing is None else getattr(self.pairing, k) for k in keys}


class Phased(Immediate):
    """Phased sleep (sleep.phased): the source pauses while the sleep worker works, so each negative batch is a step
    of its own, on arrival."""

    def on_negative(self, seq: int, inputs: torch.Tensor) -> None:
        super().on_negative(seq, inputs)
        self.worker.stepper.negatives_only()


class Paired(Immediate):
    """Hold each positive until the negatives made from the same frames arrive, then step on both (pairing.py)."""

    merge = False  # steps of the positives ready at once: False one each, as the reference; True one merged step
    max_held = Pairing.max_held  # positive micro-batches held at most

    def __init__(self, worker: LayerWorker):
        super().__init__(worker)
        self.pairing = Pairing(max_held=self.max_held)
        self.last_learn = time.monotonic()  # when the last paired step ended (Scheduled's time trigger)

    def learn(self, x: torch.Tensor, labels: torch.Tensor | None, seqs: list[int], pass_on: PassOn) -> dict[str, float]:
        self.worker.inbox.drain()  # negatives sent just before these positives join this step
        if self.busy():
            return self.hold(x, labels, seqs, pass_on)
        negatives = self.pairing.take_if_ready(seqs)
        if negatives is None:
            stats = self.hold(x, labels, seqs, pass_on)
        else:
            # One forward pass serves the activity sent on and this step's gradient (the negatives are those of the
            # same frames, already here: the step is the interleaved reference's).
            stats, _ = self._step(x, negatives, labels, on_forward=pass_on)
        self.step_ready()  # after the activity has gone on: forwarding never waits behind learning
        return stats

    def busy(self) -> bool:
        """Whether a positive that just came is held and the ready ones wait: learning waits for the input to calm."""
        return False

    def hold(self, x: torch.Tensor, labels: torch.Tensor | None, seqs: list[int], pass_on: PassOn) -> dict[str, float]:
        """The activity goes on now; the step waits for the negatives of these frames."""
        stats = forward_only(self.worker, x, pass_on)
        self.pairing.add_positive(seqs, x, labels)
        return stats

    def on_negative(self, seq: int, inputs: torch.Tensor) -> None:
        self.pairing.add_negative(seq, inputs)
        self.step_ready()

    def idle(self) -> None:
        self.step_ready()

    def step_ready(self) -> None:
        """Step every held positive whose negatives are in, then what waited too long, alone."""
        ready = self.pairing.ready_by_seq()
        groups = [ready] if ready and self.merge else [[pair] for pair in ready]
        for group in groups:
            positives, labels = merged([held for held, _ in group])
            self._step(positives, [n for _, negatives in group for n in negatives], labels)
        if ready:
            self.last_learn = time.monotonic()
        self.step_expired()

    def step_expired(self) -> None:
        late_positives, orphan_negatives = self.pairing.expired()
        for inputs in orphan_negatives:
            self.worker.layer.add_negative_inputs(inputs)  # joins the next step
        for held in late_positives:
            self._step(held.inputs, [], held.labels)

    def before_end(self) -> None:
        """Step the held rows with their negatives before the end goes on, so that the layer above gets their
        chained negatives before its own end (else it steps those rows alone at its drain). Negatives made
        from the last frames may still be on their way: wait for them, END_PAIRING_WAIT_S at most."""
        deadline = time.monotonic() + END_PAIRING_WAIT_S
        while self.pairing.ready_rows() < self.pairing.held_rows():
            left_ms = (deadline - time.monotonic()) * 1000
            if left_ms <= 0 or self.worker.stopping:
                break
            if self.worker.inbox.receiver.sock.poll(min(POLL_MS, left_ms)):
                self.worker.inbox.drain(LIVE_MAX_HELD)
        self.step_ready()

    def drain(self) -> None:
        self.step_ready()  # what has its negatives steps paired; the rest alone
        held = self.pairing.held
        steps = [merged(held)] if held and self.merge else [merged([h]) for h in held]
        for inputs, labels in steps:  # merging policies take one merged step, as they always do
            self._step(inputs, [], labels)
        held.clear()

    def _step(self, positives: torch.Tensor, negatives: Negatives, labels: torch.Tensor | None,
              on_forward: PassOn | None = None) -> tuple[dict, torch.Tensor]:
        return self.worker.stepper.step(positives, negatives, labels, on_forward=on_forward)


class ForwardFirst(Paired):
    """Live video (model.forward_first): frames that queue up are forwarded first and learned on afterwards, merged
    into fewer, larger steps; past half of max_held the layer steps whatever it can, even with frames waiting."""

    merge = True
    max_held = LIVE_MAX_HELD

    def busy(self) -> bool:
        return self.worker.input.sock.poll(0) != 0 and len(self.pairing.held) < self.pairing.max_held // 2


class Scheduled(Paired):
    """Live video, learning on a schedule (model.learn_every_rows / learn_every_ms): every frame is forwarded and held;
    one step on every ready row once learn_every_rows are ready, or learn_every_ms after the last step."""

    merge = True
    max_held = LIVE_MAX_HELD
    negative_burst = LIVE_MAX_HELD  # a layer below sends a step's negatives in a burst: take them all

    def __init__(self, worker: LayerWorker):
        super().__init__(worker)
        self.batching: Batching = worker.batching  # learn_every_rows and learn_every_ms

    def learn(self, x: torch.Tensor, labels: torch.Tensor | None, seqs: list[int], pass_on: PassOn) -> dict[str, float]:
        self.worker.inbox.drain()
        return self.hold(x, labels, seqs, pass_on)

    def on_negative(self, seq: int, inputs: torch.Tensor) -> None:
        self.pairing.add_negative(seq, inputs)  # the schedule decides when to step (tick)

    def idle(self) -> None:
        """Nothing: the schedule (tick) steps, idle or not."""

    def tick(self) -> None:
        """Step when due; frames waiting at the input are forwarded first (unless half of max_held waits)."""
        pairing, b = self.pairing, self.batching
        if self.worker.input.sock.poll(0) and len(pairing.held) < pairing.max_held // 2:
            return
        rows = pairing.ready_rows()
        since_ms = (time.monotonic() - self.last_learn) * 1000
        if rows and ((b.learn_every_rows and rows >= b.learn_every_rows) or (b.learn_every_ms and since_ms >= b.learn_every_ms)):
            self.step_ready()
        else:
            self.step_expired()

    def _step(self, positives: torch.Tensor, negatives: Negatives, labels: torch.Tensor | None,
              on_forward: PassOn | None = None) -> tuple[dict, torch.Tensor]:
        # Frames that arrive during the step go on between its passes, on the weights it has not yet changed, and
        # their rows are held for a later step: forwarding never waits a whole step.
        return self.worker.stepper.step(positives, negatives, labels, on_forward=on_forward, between=self.worker.forward_waiting)


class Frozen(Immediate):
    """Inference only (model.freeze): every micro-batch is forwarded on the weights as loaded and never stepped."""

    def learn(self, x: torch.Tensor, labels: torch.Tensor | None, seqs: list[int], pass_on: PassOn) -> dict[str, float]:
        return forward_only(self.worker, x, pass_on)

    def on_negative(self, seq: int, inputs: torch.Tensor) -> None:
        self.worker.dropped["negative_while_frozen"] += 1


StepPolicy = Immediate  # the interface: every policy is one of these
POLICIES: dict[str, type[StepPolicy]] = {p.__name__.lower(): p for p in (Immediate, Phased, Paired, ForwardFirst, Scheduled, Frozen)}


def choose(batching: Batching, *, paired: bool, phased: bool, frozen: bool = False) -> type[StepPolicy]:
    """The policy of a layer: `paired` when it pairs the sleep worker's negative inputs with their positives,
    `phased` when it takes them on their own while the source pauses; neither: with the next step. `frozen`: none."""
    if frozen:
        return Frozen
    if batching.scheduled and not paired:
        raise ValueError("scheduled learning (learn_every_rows / learn_every_ms) needs paired negatives")
    if not paired:
        return Phased if phased else Immediate
    if batching.scheduled:
        return Scheduled
    return ForwardFirst if batching.forward_first else Paired


def forward_only(worker, x: torch.Tensor, pass_on: PassOn) -> dict[str, float]:
    """A forward pass on the current weights, its activity passed on, no step: the figures of rows not (yet) learned."""
    layer = worker.layer
    with worker.phases("forward"), torch.no_grad():
        h = layer(x)
    pass_on(h)
    goodness = layer.goodness(h)
    return {"goodness": float(goodness.mean()), "p": float(layer.probability(goodness).mean())}
