"""The interaction environment for golden Raft scripts (etcd's rafttest
InteractionEnv), on top of SimNetwork.

Commands (ids are node ids):

    add-nodes N [voters=(1,2,3)] [learners=(4)] [index=K] [election-ticks=10]
              [heartbeat-ticks=1] [pre-vote=true] [check-quorum=true] [max-inflight-msgs=256]
        The first call creates nodes 1..N, bootstrapped with the given
        configuration (default: all voters) from a snapshot at index K (default
        0: configuration only). A later call adds N new empty nodes.
    campaign ID                      the node starts an election (no stabilize)
    propose ID DATA                  propose DATA (text)
    propose-conf-change ID add|remove|learner N
    stabilize [ID...]                handle Readys and deliver messages until quiet
    process-ready ID                 handle one Ready of the node
    deliver-msgs ID                  deliver the node's in-flight messages
    tick-election ID                 a leader: election-ticks ticks; others: tick until
                                     the node changes role or term (at most 2x election-ticks)
    tick-heartbeat ID                heartbeat-ticks ticks
    read-index ID CTX
    transfer-leader FROM TO
    isolate ID | cut A B | heal
    raft-state                       role, term, leader, commit, applied of every node
    raft-log ID                      the node's durable log
    applied ID                       the node's app state: applied index and payloads
    status ID                        the node's status (and a leader's progress)
    compact ID INDEX
    crash ID | crash-after-persist ID | restart ID

Output is deterministic: core log lines (INFO and above) interleaved with
handled Readys and delivered messages, as SimNetwork's trace records them.
"""

from __future__ import annotations

from pathlib import Path

from raft.core import ConfChange, ConfChangeType, ProposalDropped, StateRole
from raft.testing.datadriven import Args, run_file
from raft.testing.network import SimNetwork, format_conf_state, format_data, format_entry

__all__ = ["InteractionEnv", "run_interaction_file"]

_CONFIG_ARGS = {
    "election-ticks": ("election_ticks", int),
    "heartbeat-ticks": ("heartbeat_ticks", int),
    "pre-vote": ("pre_vote", lambda v: v == "true"),
    "check-quorum": ("check_quorum", lambda v: v == "true"),
    "max-inflight-msgs": ("max_inflight_msgs", int),
    "max-size-per-msg": ("max_size_per_msg", int),
    "step-down-on-removal": ("step_down_on_removal", lambda v: v == "true"),
}

_CC_TYPES = {"add": ConfChangeType.ADD_NODE, "remove": ConfChangeType.REMOVE_NODE, "learner": ConfChangeType.ADD_LEARNER}


class InteractionEnv:
    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._net: SimNetwork | None = None
        self._next_id = 1

    @property
    def net(self) -> SimNetwork:
        if self._net is None:
            raise ValueError("no nodes yet: start with add-nodes")
        return self._net

    def handle(self, cmd: str, args: Args) -> str:
        method = getattr(self, "_cmd_" + cmd.replace("-", "_"), None)
        if method is None:
            raise ValueError(f"{args.pos}: unknown command {cmd!r}")
        mark = len(self._net.trace) if self._net is not None else 0
        extra: list[str] = method(args) or []
        trace = self.net.trace[mark:] if self._net is not None else []
        if self._net is not None:
            del self._net.trace[:]  # keep memory flat: each command's output is taken once
        return "\n".join([*trace, *extra]) if trace or extra else "ok"

    # -- helpers --------------------------------------------------------------------
    @staticmethod
    def _ids(args: Args) -> list[int]:
        return [int(a) for a in args.positional()]

    def _one(self, args: Args) -> int:
        ids = self._ids(args)
        if len(ids) != 1:
            raise ValueError(f"{args.pos}: expected one node id")
        return ids[0]

    # -- commands --------------------------------------------------------------------
    def _cmd_add_nodes(self, args: Args) -> list[str]:
        n = int(args.positional()[0])
        overrides: dict[str, object] = {}
        for key, (field, conv) in _CONFIG_ARGS.items():
            val = args.get(key)
            if val is not None:
                overrides[field] = conv(val)
        ids = list(range(self._next_id, self._next_id + n))
        self._next_id += n
        if self._net is None:
            voters = args.get_list("voters")
            learners = tuple(int(x) for x in (args.get_list("learners") or ()))
            members = tuple(int(x) for x in voters) if voters is not None else tuple(i for i in ids if i not in learners)
            net = SimNetwork.new(
                members,
                self.seed,
                learners,
                log_to_trace=True,
                bootstrap_index=int(args.get("index") or 0),
                **overrides,
            )
            self._net = net
            for i in ids:
                if i not in net.storages:
                    net.add_node(i)
        else:
            if overrides:
                raise ValueError(f"{args.pos}: config options only on the first add-nodes")
            for i in ids:
                self.net.add_node(i)
        return []

    def _cmd_campaign(self, args: Args) -> list[str]:
        self.net.nodes[self._one(args)].campaign()
        return []

    def _cmd_propose(self, args: Args) -> list[str]:
        pos = args.positional()
        try:
            self.net.propose(int(pos[0]), pos[1].encode())
        except ProposalDropped as e:
            return [f"raft proposal dropped: {e}"]
        return []

    def _cmd_propose_conf_change(self, args: Args) -> list[str]:
        pos = args.positional()
        cc = ConfChange(type=_CC_TYPES[pos[1]], node_id=int(pos[2]))
        try:
            self.net.propose_conf_change(int(pos[0]), cc)
        except ProposalDropped as e:
            return [f"raft proposal dropped: {e}"]
        return []

    def _cmd_stabilize(self, args: Args) -> list[str]:
        ids = self._ids(args)
        self.net.stabilize(ids=ids or None)
        return []

    def _cmd_process_ready(self, args: Args) -> list[str]:
        out = []
        for i in self._ids(args):
            if not self.net.process_ready(i):
                out.append(f"> {i}: no Ready")
        return out

    def _cmd_deliver_msgs(self, args: Args) -> list[str]:
        out = []
        for i in self._ids(args):
            if not self.net.deliver_msgs(i):
                out.append(f"> {i}: no messages")
        return out

    def _cmd_tick_election(self, args: Args) -> list[str]:
        net = self.net
        node = net.nodes[self._one(args)]
        cfg_ticks = int(net.config_overrides.get("election_ticks", 10))  # type: ignore[call-overload]
        r = node.raft
        if r.role == StateRole.LEADER:
            for _ in range(cfg_ticks):
                node.tick()
            return []
        before = (r.role, r.term)
        for _ in range(2 * cfg_ticks):
            node.tick()
            if (r.role, r.term) != before:
                break
        return []

    def _cmd_tick_heartbeat(self, args: Args) -> list[str]:
        n = int(self.net.config_overrides.get("heartbeat_ticks", 1))  # type: ignore[call-overload]
        self.net.tick(self._one(args), n)
        return []

    def _cmd_read_index(self, args: Args) -> list[str]:
        pos = args.positional()
        self.net.read_index(int(pos[0]), pos[1].encode())
        return []

    def _cmd_transfer_leader(self, args: Args) -> list[str]:
        a, b = self._ids(args)
        self.net.transfer_leader(a, b)
        return []

    def _cmd_isolate(self, args: Args) -> list[str]:
        self.net.isolate(self._one(args))
        return []

    def _cmd_cut(self, args: Args) -> list[str]:
        a, b = self._ids(args)
        self.net.cut(a, b)
        return []

    def _cmd_heal(self, args: Args) -> list[str]:
        self.net.heal()
        return []

    def _cmd_crash(self, args: Args) -> list[str]:
        self.net.crash(self._one(args))
        return []

    def _cmd_crash_after_persist(self, args: Args) -> list[str]:
        self.net.crash_after_persist(self._one(args))
        return []

    def _cmd_restart(self, args: Args) -> list[str]:
        self.net.restart(self._one(args))
        return []

    def _cmd_compact(self, args: Args) -> list[str]:
        i, index = self._ids(args)
        self.net.compact(i, index)
        return self._raft_log(i)

    def _cmd_raft_log(self, args: Args) -> list[str]:
        return self._raft_log(self._one(args))

    def _raft_log(self, i: int) -> list[str]:
        s = self.net.storages[i]
        first, last = s.first_index(), s.last_index()
        if last < first:
            return [f"log is empty: first index={first}, last index={last}"]
        return [format_entry(e) for e in s.entries(first, last + 1)]

    def _cmd_raft_state(self, args: Args) -> list[str]:
        net = self.net
        out = []
        for i in sorted(net.storages):
            node = net.nodes.get(i)
            if node is None:
                out.append(f"{i}: crashed")
                continue
            r = node.raft
            st = node.status()
            kind = "learner" if i in st.conf_state.learners else "voter" if i in st.conf_state.voters else "none"
            out.append(
                f"{i}: {r.role.name} ({kind}) term={r.term} leader={r.leader_id} "
                f"commit={r.raft_log.committed} applied={net.applied_index[i]}"
            )
        return out

    def _cmd_applied(self, args: Args) -> list[str]:
        i = self._one(args)
        data = " ".join(format_data(d) for d in self.net.applied[i])
        return [f"{i}: applied index={self.net.applied_index[i]} data=[{data}]"]

    def _cmd_status(self, args: Args) -> list[str]:
        i = self._one(args)
        st = self.net.nodes[i].status()
        hs = st.hard_state
        out = [
            f"{i}: {st.soft_state.role.name} leader={st.soft_state.leader_id} term={hs.term} vote={hs.vote} "
            f"commit={hs.commit} applied={st.applied} first={st.first_index} last={st.last_index}",
            f"conf: {format_conf_state(st.conf_state)}",
        ]
        for j in sorted(st.progress):
            pr = st.progress[j]
            flags = (" learner" if pr.is_learner else "") + ("" if pr.recent_active else " inactive")
            out.append(f"  {j}: {pr.state.name} match={pr.match} next={pr.next}{flags}")
        return out


def run_interaction_file(path: str | Path, rewrite: bool = False, seed: int = 0) -> None:
    env = InteractionEnv(seed)
    run_file(path, env.handle, rewrite)
