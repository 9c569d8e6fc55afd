"""Seeded simulations of 3- and 5-node Raft groups over SimNetwork.

Each seed runs a random scenario (chaos on the wire, partitions and heals,
crashes and restarts from what was persisted, including a crash between the
persist and the sends, proposals, compaction, leader transfers, read-index,
membership changes: add a learner, promote it, remove a voter or the leader)
and checks Raft's safety properties after every step. At the end it heals
everything, restarts the crashed nodes and checks liveness: a leader exists,
a final proposal commits on every live member, and every member applied the
same sequence.

An even seed runs 3 nodes, an odd seed 5; (seed // 2) % 4 picks pre-vote and
check-quorum (both on, pre-vote only, check-quorum only, both off); and
(seed // 8) % 2 == 1 sends one entry per append message with a window of 3
in flight. A failure names its seed; replay it exactly, with the network
trace, by

    FLOTILLA_SEED=<n> python -m pytest tests/sim -k replay

`pytest -m slow tests/sim` runs FLOTILLA_SIM_SEEDS seeds (default 5000).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field, replace

import pytest

from raft.core import ConfChange, ConfChangeType, ProposalDropped
from raft.testing import SafetyViolation, SimNetwork, check_safety

DEFAULT_SEEDS = 200
STEPS = 500
FINAL_TICKS = 400  # bound on the liveness phase, in tick_all rounds
MAX_ADDED_NODES = 3  # nodes a scenario may add beyond the initial ones
REPLAY_HINT = "FLOTILLA_SEED={seed} python -m pytest tests/sim -k replay"

CHAOS_PRESETS = [
    {},
    {},
    {"drop": 0.05},
    {"dup": 0.1, "reorder": 0.3},
    {"delay": 0.1, "reorder": 0.3},
    {"drop": 0.1, "dup": 0.05, "reorder": 0.5, "delay": 0.05},
]


class SimFailure(AssertionError):
    pass


@dataclass
class Scenario:
    seed: int
    trace: bool = False
    n_nodes: int = 0
    next_id: int = 0  # id of the next node a membership change adds
    net: SimNetwork = field(init=False)
    rng: random.Random = field(init=False)
    actions: list[str] = field(default_factory=list)
    proposals: int = 0
    read_floor: dict[bytes, int] = field(default_factory=dict)
    reads_checked: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.n_nodes = 3 if self.seed % 2 == 0 else 5
        variant = (self.seed // 2) % 4  # pre-vote and check-quorum on, or one or both off
        # Every other group of 8 seeds sends one entry per append with a small
        # in-flight window: acknowledgements then cover parts of a leader's log.
        small_msgs = (self.seed // 8) % 2 == 1
        self.net = SimNetwork.new(
            range(1, self.n_nodes + 1),
            seed=self.seed,
            trace=self.trace,
            bootstrap_index=1,  # the configuration is in a snapshot: nodes can be added later
            pre_vote=variant in (0, 2),
            check_quorum=variant in (0, 1),
            max_size_per_msg=1 if small_msgs else 1 << 20,
            max_inflight_msgs=3 if small_msgs else 256,
        )
        self.next_id = self.n_nodes + 1
        # The scenario's choices and the network's draws (faults, node RNG
        # seeds) are separate streams, both derived from the seed.
        self.rng = random.Random(f"flotilla-sim-scenario-{self.seed}")

    # -- helpers ----------------------------------------------------------------------
    def live(self) -> list[int]:
        return sorted(self.net.nodes)

    def stabilize(self) -> None:
        self.net.stabilize()

    def commit_floor(self) -> int:
        """The highest commit index any node knows of (live: in memory; crashed:
        persisted). A read issued now must return at least this index."""
        net = self.net
        best = 0
        for i, s in net.storages.items():
            node = net.nodes.get(i)
            best = max(best, node.raft.raft_log.committed if node is not None else s.hard_state.commit)
        return best

    def check(self) -> None:
        check_safety(self.net)
        for i, states in self.net.read_states.items():
            for rs in states[self.reads_checked.get(i, 0) :]:
                floor = self.read_floor.get(rs.request_ctx)
                if floor is not None and rs.index < floor:
                    raise SimFailure(
                        f"read-index {rs.request_ctx!r} answered at node {i} with index {rs.index}, "
                        f"below the commit index {floor} known when it was issued"
                    )
            self.reads_checked[i] = len(states)

    # -- steps ---------------------------------------------------------------------------
    def step(self) -> None:
        rng, net = self.rng, self.net
        live = self.live()
        crashed = sorted(net.crashed)
        choice = rng.choices(
            ["tick", "propose", "partition", "heal", "crash", "restart", "compact", "transfer", "read", "chaos",
             "skew", "stabilize", "campaign", "partial", "reboot", "member", "strand"],
            weights=[30, 25, 5, 3, 3, 4, 6, 2, 4, 3, 3, 5, 4, 6, 3, 3, 4],
        )[0]
        if choice == "tick":
            n = rng.randint(1, 4)
            self.actions.append(f"tick_all({n})")
            net.tick_all(n)
            self.stabilize()
        elif choice == "skew" and live:
            i = rng.choice(live)
            n = rng.randint(1, 8)
            self.actions.append(f"tick({i}, {n})")
            net.tick(i, n)
        elif choice == "propose" and live:
            leader = net.leader()
            i = leader if leader is not None and rng.random() < 0.7 else rng.choice(live)
            for _ in range(rng.randint(1, 3)):
                self.proposals += 1
                data = f"s{self.seed}-p{self.proposals}".encode()
                self.actions.append(f"propose({i}, {data!r})")
                try:
                    net.propose(i, data)
                except ProposalDropped:
                    self.actions.append("  dropped")
            if rng.random() < 0.6:
                self.stabilize()
        elif choice == "partition":
            if rng.random() < 0.5 and live:
                i = rng.choice(live)
                self.actions.append(f"isolate({i})")
                net.isolate(i)
            else:
                a, b = rng.sample(sorted(net.storages), 2)
                self.actions.append(f"cut({a}, {b})")
                net.cut(a, b)
        elif choice == "heal":
            self.actions.append("heal()")
            net.heal()
        elif choice == "crash" and self.may_crash() and live:
            i = rng.choice(live)
            if rng.random() < 0.5:
                self.actions.append(f"crash_after_persist({i})")
                net.crash_after_persist(i)
            else:
                self.actions.append(f"crash({i})")
                net.crash(i)
        elif choice == "restart" and crashed:
            i = rng.choice(crashed)
            self.actions.append(f"restart({i})")
            net.restart(i)
        elif choice == "compact" and live:
            i = rng.choice(live)
            applied = net.applied_index[i]
            first = net.storages[i].first_index()
            if applied >= first:
                index = rng.randint(first, applied)
                self.actions.append(f"compact({i}, {index})")
                net.compact(i, index)
        elif choice == "transfer":
            leader = net.leader()
            if leader is not None:
                target = rng.choice([j for j in sorted(net.storages) if j != leader])
                self.actions.append(f"transfer_leader({leader}, {target})")
                net.transfer_leader(leader, target)
                if rng.random() < 0.5:
                    self.stabilize()
        elif choice == "read" and live:
            i = rng.choice(live)
            ctx = f"r{len(self.read_floor)}".encode()
            self.read_floor[ctx] = self.commit_floor()
            self.actions.append(f"read_index({i}, {ctx!r})")
            net.read_index(i, ctx)
            if rng.random() < 0.6:
                self.stabilize()
        elif choice == "chaos":
            preset = rng.choice(CHAOS_PRESETS)
            self.actions.append(f"set_chaos({preset})")
            net.set_chaos(**preset)
        elif choice == "campaign" and live:
            # No stabilize: two campaigns in a row make competing candidates.
            i = rng.choice(live)
            self.actions.append(f"nodes[{i}].campaign()")
            net.nodes[i].campaign()
        elif choice == "partial" and live:
            # Only some nodes handle Readys and receive: the rest stay in flight.
            ids = rng.sample(live, rng.randint(1, len(live)))
            self.actions.append(f"stabilize(ids={sorted(ids)})")
            net.stabilize(ids=ids)
        elif choice == "reboot" and live:
            i = rng.choice(live)
            self.actions.append(f"crash({i}); restart({i})")
            net.crash(i)
            net.restart(i)
        elif choice == "strand":
            self.strand_leader()
        elif choice == "member":
            self.change_membership()
        elif choice == "stabilize":
            self.actions.append("stabilize()")
            self.stabilize()

    def may_crash(self) -> bool:
        """Keep crashed nodes to a minority, but now and then allow one more."""
        return len(self.net.crashed) < (self.n_nodes - 1) // 2 + (self.rng.random() < 0.2)

    def strand_leader(self) -> None:
        """The leader appends an entry that reaches at most one follower, then
        is cut off or crashes: the logs diverge across terms, the shape of the
        paper's Figure 8 (an old-term entry on a majority is not committed)."""
        rng, net = self.rng, self.net
        leader = net.leader()
        if leader is None:
            return
        self.proposals += 1
        data = f"s{self.seed}-p{self.proposals}".encode()
        self.actions.append(f"propose({leader}, {data!r})")
        try:
            net.propose(leader, data)
        except ProposalDropped:
            self.actions.append("  dropped")
            return
        peers = [i for i in self.live() if i != leader]
        ids = [leader] + rng.sample(peers, min(len(peers), rng.randint(0, 1)))
        self.actions.append(f"stabilize(ids={sorted(ids)})")
        net.stabilize(ids=ids)
        if leader not in net.nodes:
            return  # it crashed (a pending crash_after_persist)
        if rng.random() < 0.5 or not self.may_crash():
            self.actions.append(f"isolate({leader})")
            net.isolate(leader)
        else:
            self.actions.append(f"crash({leader})")
            net.crash(leader)

    def change_membership(self) -> None:
        """Add a new node as a learner, promote a learner, or remove a voter
        (possibly the leader), keeping 3 to 5 voters."""
        rng, net = self.rng, self.net
        leader = net.leader()
        if leader is None:
            return
        cs = net.nodes[leader].status().conf_state
        op = rng.random()
        if op < 0.4 and self.next_id <= self.n_nodes + MAX_ADDED_NODES:
            new = self.next_id
            self.next_id += 1
            self.actions.append(f"add_node({new})")
            net.add_node(new)
            cc = ConfChange(ConfChangeType.ADD_LEARNER, new)
        elif op < 0.7 and cs.learners and len(cs.voters) < 5:
            cc = ConfChange(ConfChangeType.ADD_NODE, rng.choice(cs.learners))
        elif len(cs.voters) > 3:
            cc = ConfChange(ConfChangeType.REMOVE_NODE, rng.choice(cs.voters))
        elif cs.learners:
            cc = ConfChange(ConfChangeType.REMOVE_NODE, rng.choice(cs.learners))
        else:
            return
        self.actions.append(f"propose_conf_change({leader}, {cc.type.name} {cc.node_id})")
        try:
            net.propose_conf_change(leader, cc)
        except ProposalDropped:
            self.actions.append("  dropped")
        if rng.random() < 0.5:
            self.stabilize()

    def members(self) -> set[int] | None:
        """The configuration of the current leader (None without a leader)."""
        leader = self.net.leader()
        if leader is None:
            return None
        cs = self.net.nodes[leader].status().conf_state
        return set(cs.voters) | set(cs.learners)

    def finish(self) -> None:
        """Heal everything and check liveness."""
        net = self.net
        self.actions.append("finish: heal, chaos off, restart all")
        net.set_chaos()
        net.heal()
        net.cancel_crash_after_persist()
        for i in sorted(net.crashed):
            net.restart(i)
        self.stabilize()
        self.check()
        final = f"s{self.seed}-final".encode()
        proposed_at: int | None = None
        for t in range(FINAL_TICKS):
            net.tick_all(1)
            self.stabilize()
            self.check()
            members = self.members()
            if members is not None:
                live = [i for i in sorted(members) if i in net.nodes]
                if all(final in net.applied[i] for i in live) and len({net.applied_index[i] for i in live}) == 1:
                    break
            leader = net.leader()
            if leader is not None and (proposed_at is None or t - proposed_at > 50):
                if final not in net.applied[leader]:
                    try:
                        net.propose(leader, final)
                        proposed_at = t
                        self.actions.append(f"propose({leader}, {final!r}) at final tick {t}")
                    except ProposalDropped:
                        pass
        else:
            status = {
                i: (n.raft.role.name, n.raft.term, n.raft.raft_log.committed, net.applied_index[i])
                for i, n in net.nodes.items()
            }
            raise SimFailure(f"no liveness after healing: {FINAL_TICKS} ticks; (role, term, commit, applied)={status}")
        members = self.members()
        if members is None:
            raise SimFailure("no leader at the end")
        seqs = {i: net.applied[i] for i in sorted(members) if i in net.nodes}
        first = seqs[min(seqs)]
        for i, s in seqs.items():
            if s != first:
                raise SimFailure(f"applied sequences differ at the end: node {min(seqs)} {first} vs node {i} {s}")

    def run(self, steps: int = STEPS) -> None:
        try:
            for k in range(steps):
                self.step()
                self.check()
            self.finish()
        except Exception as exc:
            tail = "\n".join(self.actions[-25:])
            raise SimFailure(
                f"seed {self.seed} ({self.n_nodes} nodes) failed after {len(self.actions)} actions: "
                f"{type(exc).__name__}: {exc}\nlast actions:\n{tail}\nreplay: {REPLAY_HINT.format(seed=self.seed)}"
            ) from exc


def run_seed(seed: int, trace: bool = False) -> Scenario:
    sc = Scenario(seed, trace=trace)
    sc.run()
    return sc


_BATCHES = 8


@pytest.mark.parametrize("batch", range(_BATCHES))
def test_sim(batch: int) -> None:
    """DEFAULT_SEEDS seeds (half 3-node, half 5-node), in batches."""
    for seed in range(batch, DEFAULT_SEEDS, _BATCHES):
        run_seed(seed)


@pytest.mark.slow
def test_sim_many_seeds() -> None:
    n = int(os.environ.get("FLOTILLA_SIM_SEEDS", "5000"))
    for seed in range(DEFAULT_SEEDS, DEFAULT_SEEDS + n):
        run_seed(seed)


def test_replay() -> None:
    """Replays one seed with the network trace: FLOTILLA_SEED=<n>."""
    raw = os.environ.get("FLOTILLA_SEED")
    if raw is None:
        pytest.skip("set FLOTILLA_SEED=<n> to replay a seed")
    seed = int(raw)
    sc = Scenario(seed, trace=True)
    try:
        sc.run()
    except SimFailure as exc:
        tail = "\n".join(sc.net.trace[-300:])
        raise SimFailure(f"{exc}\n--- last 300 lines of the network trace ---\n{tail}") from exc


def test_same_seed_same_run() -> None:
    """Determinism: one seed gives one run, trace for trace."""
    a = Scenario(7, trace=True)
    a.run(steps=60)
    b = Scenario(7, trace=True)
    b.run(steps=60)
    assert a.net.trace == b.net.trace
    assert a.net.applied == b.net.applied


# -- the checker itself: each property must fire on a fabricated violation ------
def _elected(seed: int = 0) -> SimNetwork:
    net = SimNetwork.new((1, 2, 3), seed=seed, trace=False)
    net.campaign(1)
    net.propose(1, b"a")
    net.propose(1, b"b")
    net.stabilize()
    check_safety(net)
    return net


def test_checker_two_leaders_in_a_term() -> None:
    net = _elected()
    net.leader_history.append((net.nodes[1].raft.term, 2))
    with pytest.raises(SafetyViolation, match="two leaders in term 1"):
        check_safety(net)


def test_checker_double_vote() -> None:
    net = _elected()
    net.vote_history.append((1, 2, 3))
    with pytest.raises(SafetyViolation, match="node 2 voted twice in term 1"):
        check_safety(net)


def test_checker_log_matching() -> None:
    net = _elected()
    net.crash(3)
    s = net.storages[3]
    ents = s.entries(s.first_index(), s.last_index() + 1)
    bad = replace(ents[1], data=b"evil")  # same term and index, other data
    s.append([bad, *ents[2:]])
    with pytest.raises(SafetyViolation, match="log matching|state machine safety"):
        check_safety(net)


def test_checker_commit_goes_back() -> None:
    net = _elected()
    net.crash(2)
    hs = net.storages[2].hard_state
    net.storages[2].set_hard_state(replace(hs, commit=hs.commit - 1))
    with pytest.raises(SafetyViolation, match="persisted commit went back"):
        check_safety(net)


def test_checker_vote_changes_within_a_term() -> None:
    net = _elected()
    net.crash(2)
    hs = net.storages[2].hard_state
    net.storages[2].set_hard_state(replace(hs, vote=3))
    with pytest.raises(SafetyViolation, match="vote changed within term"):
        check_safety(net)


def test_checker_applied_diverges() -> None:
    net = _elected()
    net.applied[3] = [b"a", b"x"]
    with pytest.raises(SafetyViolation, match="state machine safety"):
        check_safety(net)


def test_checker_leader_missing_committed_entry() -> None:
    net = _elected()
    leader = net.nodes[1].raft
    # Pretend node 1 is a leader of a later term whose log lacks the committed entries.
    committed = leader.raft_log.committed
    net.crash(2)
    net.crash(3)
    leader.term += 1
    entries = leader.raft_log.all_entries()
    leader.raft_log.all_entries = lambda: entries[: committed - 2]  # type: ignore[method-assign]
    with pytest.raises(SafetyViolation, match="leader completeness"):
        check_safety(net)
