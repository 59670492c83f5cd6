"""Register hazards of in-flight wgmmas in sm_90 SASS (used by gluon_compile_worker.py; no imports
with side effects, so tests can check the checker itself)."""
import re

__all__ = ["a_reg_hazards"]


def _written(text: str) -> set:
    """Registers an instruction writes (its first operand; 64/128-bit loads write 2/4)."""
    m = re.match(r"(?:@!?U?P\w+\s+)?([A-Z0-9_.]+)\s+R(\d+)", text)
    if not m or m.group(1).startswith(("ST", "HGMMA", "RED", "LDGSTS")):
        return set()
    op, reg = m.group(1), int(m.group(2))
    width = 4 if ".128" in op else (2 if (op.startswith("LD") and ".64" in op) or op.startswith("IMAD.WIDE") else 1)
    return set(range(reg, reg + width))


def _successors(body: list) -> list:
    """Per instruction of the loop body (address, text): the indices it can go to next inside the body (the
    back edge excluded: the walk's second pass covers it). A branch to an address in the body goes there; an
    unpredicated one goes nowhere else."""
    at = {addr: i for i, (addr, _) in enumerate(body)}
    out = []
    for i, (_, text) in enumerate(body):
        nxt = []
        m = re.match(r"(@!?U?P\w+\s+)?BRA\s+(?:`\(\S+\)\s*)?0x([0-9a-f]+)", text)
        if m and at.get(int(m.group(2), 16), -1) > i:
            nxt.append(at[int(m.group(2), 16)])
        if not (m and m.group(1) is None) and i + 1 < len(body):
            nxt.append(i + 1)
        out.append(nxt)
    return out


def a_reg_hazards(body: list) -> int:
    """Writes to a register that an in-flight wgmma group reads as its A operand, walking the K loop twice
    (the first pass only sets up what is in flight at the back edge). A group ends at the HGMMA marked
    gsb0; WARPGROUP.DEPBAR.LE gsb0, n leaves the newest n groups in flight (OVERLAP: n = 1). `body`: the loop's
    instruction texts (walked in order) or (address, text) pairs, whose forward branches are followed (a loop with a
    copy of its step per branch: what is in flight at an instruction is what any path to it leaves in flight)."""
    if body and isinstance(body[0], tuple):
        succ = _successors(body)
        texts = [t for _, t in body]
    else:
        texts = list(body)
        succ = [[i + 1] if i + 1 < len(texts) else [] for i in range(len(texts))]
    hazards, back = 0, ([], set())
    for walk in range(2):
        state = {0: back}          # instruction index -> (groups in flight, the open group's registers)
        for i, text in enumerate(texts):
            if i not in state:
                continue
            in_flight, group = state.pop(i)
            m = re.match(r"HGMMA\S*\s+R\d+,\s*R(\d+)", text)
            d = re.search(r"WARPGROUP\.DEPBAR\.LE\s+gsb0,\s*0x(\d+)", text)
            if m:
                group = group | set(range(int(m.group(1)), int(m.group(1)) + 4))
                if "gsb0" in text:
                    in_flight, group = in_flight + [group], set()
            elif d:
                keep = int(d.group(1), 16)
                in_flight = in_flight[len(in_flight) - keep:] if keep else []
            elif walk and any(_written(text) & g for g in in_flight):
                hazards += 1
            for j in succ[i]:      # paths meet: the union of what each leaves in flight, newest groups aligned
                if j in state:
                    other, og = state[j]
                    n = max(len(other), len(in_flight))
                    pad = lambda x: [set()] * (n - len(x)) + x   # noqa: E731
                    state[j] = ([a | b for a, b in zip(pad(other), pad(in_flight))], og | group)
                else:
                    state[j] = (in_flight, group)
            if i == len(texts) - 1:     # the back edge: what the next iteration starts with
                back = (in_flight, group)
    return hazards
