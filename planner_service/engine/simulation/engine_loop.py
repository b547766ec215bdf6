"""A simulation of vLLM V1's engine loop under a benchmark client (pure, deterministic).

One iteration is one ``EngineCore.step``: ``Scheduler.schedule()`` then the step's time from the step
model. The scheduler follows ``vllm/v1/core/sched/scheduler.py`` (reference ``vllm-engine-and-bench.md``
§1), which has no prefill or decode phase:

1. a token budget of ``max_num_batched_tokens``;
2. RUNNING requests first, in admission order: each asks for ``num_tokens - num_computed_tokens``
   tokens (1 when decoding, the rest of its prompt while prefilling - chunked prefill is always on),
   capped by the remaining budget (a request that gets 0 is skipped, not a stop);
3. blocks for the new tokens from the KV pool (the twin's ``num_gpu_blocks`` less the null block);
   when the pool is empty the LAST running request is preempted - its blocks freed, its computed tokens
   reset to 0 (recompute), and it goes to the head of the waiting queue - until the allocation succeeds
   or the request itself is the victim;
4. only if nothing was preempted in the step: WAITING requests in FCFS order while budget is left and
   fewer than ``max_num_seqs`` run; each admission needs blocks for its first chunk (from 0.20: for its
   whole prompt); the first one that does not fit stops admission (head-of-line blocking);
5. a request whose computed tokens reach its length samples a token at the end of the step (the first
   output token ends the last prefill chunk); one new block every ``block_size`` tokens.

Prefix caching: the random benchmark prompts share nothing (§1.5) except an optional common prefix
(``--random-prefix-len``), whose full blocks hit once the first request has computed them; a preempted
request resumes on whatever of its own blocks were not yet evicted (vLLM frees a request's blocks in
reverse, so its prefix is evicted last, and evicts the least recently freed block first).

The client side is ``vllm bench serve``: requests are released on the arrival schedule, wait for a
``--max-concurrency`` slot if one is set (that wait is not in TTFT), and go through the API server
(``frontend.py``). Steps in which nothing changes but the running requests' lengths (pure decode, no
arrival, no completion, no new block shortage) are fast-forwarded together, with the same arithmetic.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass

import numpy as np

from planner_service.engine.simulation.frontend import ApiServer
from planner_service.engine.simulation.shape import BlockRule
from planner_service.engine.simulation.step_cost import StepCostModel, StepWork
from planner_service.engine.simulation.workload import Workload

_MIN_SPAN_STEPS = 3


@dataclass(frozen=True)
class SchedulerLimits:
    max_num_seqs: int
    max_num_batched_tokens: int
    num_blocks: int  # usable blocks: the twin's num_gpu_blocks less the null block
    blocks: BlockRule
    max_model_len: int
    enable_prefix_caching: bool
    admit_full_prompt: bool
    sliding_window: int  # 0 = none (decode reads are capped at it on sliding layers)


@dataclass(frozen=True)
class RunTrace:
    """What the client saw per request, plus engine counters (times in seconds from the start)."""

    sent: np.ndarray  # NaN for requests that failed before reaching the engine
    first_token: np.ndarray
    finished: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    failed: np.ndarray  # bool
    itl_values: np.ndarray  # pooled inter-token gaps (s), each with a weight (how many gaps it stands for)
    itl_weights: np.ndarray
    token_times: np.ndarray  # when the client received each step's tokens, and how many
    token_counts: np.ndarray
    preemptions: int
    max_running: int
    steps: int


class _Client:
    """``vllm bench serve``'s send loop: arrival schedule + ``--max-concurrency`` semaphore."""

    def __init__(self, workload: Workload, max_concurrency: int | None, api: ApiServer, failed: np.ndarray) -> None:
        self.release = workload.release_seconds
        self.prompt = workload.input_tokens
        self.limit = max_concurrency
        self.api = api
        self.failed = failed
        self.next_release = 0
        self.queue: deque[int] = deque()
        self.in_flight = 0
        self.sent = np.full(workload.size, np.nan)
        self.engine_arrivals: list[tuple[float, int]] = []
        self.failed_done = 0

    def _send(self, i: int, at: float) -> None:
        self.sent[i] = at
        self.in_flight += 1
        heapq.heappush(self.engine_arrivals, (self.api.ingest(at, int(self.prompt[i])), i))

    def _slot_free(self) -> bool:
        return self.limit is None or self.in_flight < self.limit

    def release_until(self, now: float) -> None:
        n = self.release.size
        while self.next_release < n and self.release[self.next_release] <= now:
            i = self.next_release
            self.next_release += 1
            if self.failed[i]:
                self.failed_done += 1  # rejected by the server at once (400: too long for max_model_len)
                continue
            if self._slot_free() and not self.queue:
                self._send(i, float(self.release[i]))
            else:
                self.queue.append(i)

    def finished(self, at: float) -> None:
        self.in_flight -= 1
        while self.queue and self._slot_free():
            self._send(self.queue.popleft(), at)

    def next_event(self) -> float:
        """Earliest time something new can reach the engine (inf when nothing is pending)."""
        nxt = self.engine_arrivals[0][0] if self.engine_arrivals else np.inf
        if self.next_release < self.release.size and self._slot_free():
            nxt = min(nxt, float(self.release[self.next_release]))
        return nxt


class EngineSimulation:
    """Run one workload through one engine; ``run()`` returns the ``RunTrace``."""

    def __init__(self, workload: Workload, cost: StepCostModel, limits: SchedulerLimits, api: ApiServer,
                 max_concurrency: int | None = None) -> None:
        self.w = workload
        self.cost = cost
        self.lim = limits
        self.api = api
        n = workload.size
        self.prompt = workload.input_tokens.astype(np.int64)
        self.target = workload.output_tokens.astype(np.int64)
        self.failed = (self.prompt + self.target > limits.max_model_len) | (self.target < 1)
        self.computed = np.zeros(n, np.int64)
        self.out = np.zeros(n, np.int64)
        self.held = np.zeros(n, np.int64)
        self.first = np.full(n, np.nan)
        self.last = np.full(n, np.nan)
        self.done_at = np.full(n, np.nan)
        self.preempted_at = np.full(n, -1, np.int64)  # absolute free-queue position of the prefix block
        self.client = _Client(workload, max_concurrency, api, self.failed)
        self.waiting: deque[int] = deque()
        self.running = np.zeros(0, np.int64)
        self.free = limits.num_blocks
        self.taken = 0  # blocks ever taken from the head of the free queue (eviction clock)
        self.prefix_blocks = workload.shared_prefix_tokens // limits.blocks.block_size if limits.enable_prefix_caching else 0
        self.prefix_ready = False
        self.itl_values: list[np.ndarray] = []
        self.itl_weights: list[np.ndarray] = []
        self.token_times: list[np.ndarray] = []
        self.token_counts: list[np.ndarray] = []
        self.preemptions = 0
        self.max_running = 0
        self.steps = 0
        self.completed = 0

    # -- blocks --------------------------------------------------------------------------------------
    def _take(self, count: int) -> None:
        self.free -= count
        self.taken += count

    def _release(self, i: int) -> None:
        self.free += int(self.held[i])
        self.held[i] = 0

    def _cache_hits(self, i: int, num_tokens: int) -> int:
        """Tokens of request ``i`` served from the prefix cache on (re)admission (full blocks only)."""
        if not self.lim.enable_prefix_caching:
            return 0
        bs = self.lim.blocks.block_size
        blocks = 0
        if self.preempted_at[i] >= 0 and self.lim.blocks.windowed_groups == 0 and self.lim.blocks.state_blocks == 0:
            blocks = max(0, int(self.preempted_at[i]) - self.taken)  # own blocks not yet evicted
        elif self.prefix_ready:
            blocks = self.prefix_blocks
        return min(blocks * bs, (num_tokens - 1) // bs * bs)

    def _preempt(self, i: int) -> None:
        blocks = int(self.held[i])
        # Its blocks join the free queue's tail in reverse order: the prefix block is evicted last.
        self.preempted_at[i] = self.taken + self.free + blocks
        self._release(i)
        self.computed[i] = 0
        self.preemptions += 1
        self.waiting.appendleft(i)

    # -- one step ----------------------------------------------------------------------------------------
    def _schedule(self) -> tuple[np.ndarray, np.ndarray]:
        """(requests, tokens) scheduled this step, in order; updates blocks and the running list."""
        lim, rule = self.lim, self.lim.blocks
        budget = lim.max_num_batched_tokens
        idx = self.running
        num_tokens = self.prompt[idx] + self.out[idx]
        new = num_tokens - self.computed[idx]
        alloc = np.clip(budget - (np.cumsum(new) - new), 0, new)
        need = np.where(alloc > 0, rule.blocks(self.computed[idx] + alloc, alloc) - self.held[idx], 0)
        need = np.maximum(need, 0)
        preempted = False
        if int(need.sum()) <= self.free:
            self.held[idx] += need
            self._take(int(need.sum()))
            sched_idx, sched_tokens = idx[alloc > 0], alloc[alloc > 0]
            budget -= int(alloc.sum())
        else:
            sched_idx, sched_tokens, budget, preempted = self._schedule_with_preemption(budget, alloc, need)
        if not preempted:
            admitted, admitted_tokens, budget = self._admit(budget)
            if admitted:
                sched_idx = np.concatenate([sched_idx, np.array(admitted, np.int64)])
                sched_tokens = np.concatenate([sched_tokens, np.array(admitted_tokens, np.int64)])
        return sched_idx, sched_tokens

    def _schedule_with_preemption(self, budget: int, alloc: np.ndarray,
                                  need: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, bool]:
        """The running loop when the pool is short: in order, preempting from the end to make room.

        ``alloc``/``need`` were computed for the whole running list; preempting pops from its end, which
        changes neither the budget nor the blocks of the requests before the victim.
        """
        running = self.running.tolist()
        allocs, needs = alloc.tolist(), need.tolist()
        sched: list[int] = []
        tokens: list[int] = []
        preempted = False
        for pos, i in enumerate(running):
            if pos >= len(running):
                break
            n = allocs[pos]
            if n <= 0:
                continue
            required = needs[pos]
            scheduled = True
            while required > self.free:
                victim = running.pop()
                preempted = True
                self._preempt(victim)
                if victim == i:
                    scheduled = False
                    break
            if not scheduled:
                break
            self.held[i] += required
            self._take(required)
            budget -= n
            sched.append(i)
            tokens.append(n)
        self.running = np.array(running, np.int64)
        return np.array(sched, np.int64), np.array(tokens, np.int64), budget, preempted

    def _admit(self, budget: int) -> tuple[list[int], list[int], int]:
        lim, rule = self.lim, self.lim.blocks
        admitted: list[int] = []
        tokens: list[int] = []
        running = self.running.size
        while self.waiting and budget > 0 and running + len(admitted) < lim.max_num_seqs:
            i = self.waiting[0]
            num_tokens = int(self.prompt[i] + self.out[i])
            hits = self._cache_hits(i, num_tokens)
            n = min(num_tokens - hits, budget)
            gate = int(rule.blocks(num_tokens, num_tokens - hits)) if lim.admit_full_prompt else int(rule.blocks(hits + n, n))
            if gate > self.free:
                break
            self.waiting.popleft()
            need = int(rule.blocks(hits + n, n))
            self.computed[i] = hits
            self.held[i] = need
            self._take(need)
            budget -= n
            admitted.append(i)
            tokens.append(n)
        if admitted:
            self.running = np.concatenate([self.running, np.array(admitted, np.int64)])
        return admitted, tokens, budget

    def _work(self, idx: np.ndarray, tokens: np.ndarray) -> StepWork:
        computed = self.computed[idx].astype(float)
        num_tokens = (self.prompt[idx] + self.out[idx]).astype(float)
        n = tokens.astype(float)
        decode = (n == 1) & (computed + 1 == num_tokens)
        window = self.lim.sliding_window or np.inf
        dctx = num_tokens[decode]
        pre_c, pre_n = computed[~decode], n[~decode]
        mid = pre_c + pre_n / 2
        return StepWork(
            decode_requests=int(decode.sum()),
            decode_context_tokens=float(dctx.sum()),
            decode_sliding_tokens=float(np.minimum(dctx, window).sum()),
            prefill_tokens=int(pre_n.sum()),
            prefill_pairs=float((pre_n * mid).sum()),
            prefill_sliding_pairs=float((pre_n * np.minimum(mid, window)).sum()),
            prefill_context_tokens=float(pre_c.sum()),
            prefill_requests=int((~decode).sum()),
            sampled_requests=int((computed + n == num_tokens).sum()),
        )

    def _step(self, now: float) -> float:
        idx, tokens = self._schedule()
        self.max_running = max(self.max_running, int(self.running.size))
        if idx.size == 0:
            if self.running.size == 0 and self.waiting:
                # The head request can never fit the empty pool (longer than the KV cache holds): vLLM
                # would keep it waiting forever; the client sees it fail.
                i = self.waiting.popleft()
                self.failed[i] = True
                self.done_at[i] = np.nan
                self.client.finished(now)
                self.client.failed_done += 1
            return now + self.cost.cpu_seconds(0)
        end = now + self.cost.step_seconds(self._work(idx, tokens))
        self.steps += 1
        self.computed[idx] += tokens
        emitted = idx[self.computed[idx] == self.prompt[idx] + self.out[idx]]
        if self.prefix_blocks and emitted.size:
            # The shared prefix is cached once a request has computed it. Every request holding it is
            # charged its blocks (vLLM holds them once): a slight overestimate of KV use.
            self.prefix_ready = True
        if emitted.size:
            delivered = self.api.deliver(end, int(emitted.size))
            self.token_times.append(np.array([delivered]))
            self.token_counts.append(np.array([float(emitted.size)]))
            firsts = emitted[self.out[emitted] == 0]
            later = emitted[self.out[emitted] > 0]
            self.first[firsts] = delivered
            if later.size:
                gaps = delivered - self.last[later]
                self.itl_values.append(gaps)
                self.itl_weights.append(np.ones(gaps.size))
            self.last[emitted] = delivered
            self.out[emitted] += 1
            self._finish(emitted[self.out[emitted] >= self.target[emitted]], delivered)
        return end

    def _finish(self, done: np.ndarray, at: float) -> None:
        if not done.size:
            return
        for i in done:
            self._release(int(i))
            self.done_at[i] = at
            self.client.finished(at)
        self.completed += int(done.size)
        self.running = self.running[~np.isin(self.running, done)]

    # -- fast-forward over pure-decode spans ---------------------------------------------------------------
    def _admission_possible(self) -> bool:
        if not self.waiting or self.running.size >= self.lim.max_num_seqs:
            return False
        i = self.waiting[0]
        num_tokens = int(self.prompt[i] + self.out[i])
        budget = self.lim.max_num_batched_tokens - int(self.running.size)
        if budget <= 0:
            return False
        hits = self._cache_hits(i, num_tokens)
        n = min(num_tokens - hits, budget)
        rule = self.lim.blocks
        gate = rule.blocks(num_tokens, num_tokens - hits) if self.lim.admit_full_prompt else rule.blocks(hits + n, n)
        return int(gate) <= self.free

    def _try_span(self, now: float) -> float | None:
        idx = self.running
        if idx.size == 0 or self._admission_possible():
            return None
        num_tokens = self.prompt[idx] + self.out[idx]
        # Every running request one token from done and past its first token: a prompt whose last chunk is
        # a single token also has one token left, but that step yields its first token (a normal step).
        if not np.all(num_tokens - self.computed[idx] == 1) or not np.all(self.out[idx] > 0):
            return None
        steps = int((self.target[idx] - self.out[idx]).min())
        if steps < _MIN_SPAN_STEPS:
            return None
        rule = self.lim.blocks
        held = self.held[idx]

        def need(k: int) -> int:
            return int(np.maximum(rule.blocks(num_tokens + k - 1) - held, 0).sum())

        if need(steps) > self.free:  # largest k whose new blocks still fit (monotone in k)
            lo, hi = 0, steps
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if need(mid) <= self.free else (lo, mid)
            steps = lo
        if steps < _MIN_SPAN_STEPS:
            return None
        window = self.lim.sliding_window or np.inf
        ctx = num_tokens.astype(float)
        durations = self.cost.decode_span_seconds(
            int(idx.size), float(ctx.sum()), float(np.minimum(ctx, window).sum()),
            float((ctx < window).sum()), steps,
        )
        ends = now + np.cumsum(durations)
        event = self.client.next_event()
        if event < ends[-1]:
            starts = ends - durations
            steps = max(1, int(np.searchsorted(starts, event, side="left")))
            ends = ends[:steps]
        if steps < _MIN_SPAN_STEPS:
            return None
        new_blocks = need(steps)
        self.held[idx] = np.maximum(rule.blocks(num_tokens + steps - 1), held)
        self._take(new_blocks)
        delivered = self.api.deliver_span(ends, int(idx.size))
        self.token_times.append(delivered)
        self.token_counts.append(np.full(steps, float(idx.size)))
        first_gaps = delivered[0] - self.last[idx]
        self.itl_values.append(first_gaps)
        self.itl_weights.append(np.ones(first_gaps.size))
        self.itl_values.append(np.diff(delivered))
        self.itl_weights.append(np.full(steps - 1, float(idx.size)))
        self.computed[idx] += steps
        self.out[idx] += steps
        self.last[idx] = delivered[-1]
        self.steps += steps
        self._finish(idx[self.out[idx] >= self.target[idx]], float(delivered[-1]))
        return float(ends[-1])

    # -- the loop ------------------------------------------------------------------------------------------
    def run(self) -> RunTrace:
        n = self.w.size
        client = self.client
        now = 0.0
        while self.completed + client.failed_done < n:
            client.release_until(now)
            while client.engine_arrivals and client.engine_arrivals[0][0] <= now:
                self.waiting.append(heapq.heappop(client.engine_arrivals)[1])
            if self.running.size == 0 and not self.waiting:
                nxt = client.next_event()
                if not np.isfinite(nxt):
                    break  # nothing left that can arrive
                now = max(now, nxt)
                continue
            span_end = self._try_span(now)
            now = span_end if span_end is not None else self._step(now)
        return RunTrace(
            sent=client.sent, first_token=self.first, finished=self.done_at, input_tokens=self.prompt,
            output_tokens=self.out.copy(), failed=self.failed.copy(),
            itl_values=np.concatenate(self.itl_values) if self.itl_values else np.zeros(0),
            itl_weights=np.concatenate(self.itl_weights) if self.itl_weights else np.zeros(0),
            token_times=np.concatenate(self.token_times) if self.token_times else np.zeros(0),
            token_counts=np.concatenate(self.token_counts) if self.token_counts else np.zeros(0),
            preemptions=self.preemptions, max_running=self.max_running, steps=self.steps,
        )
