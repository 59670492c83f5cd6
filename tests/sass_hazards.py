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


def a_reg_hazards(body: list) -> int:
    """Writes to a register that an in-flight wgmma group reads as its A operand, walking the K loop twice
    (the first pass only sets up what is in flight at the back edge). A group ends at the HGMMA marked
    gsb0; WARPGROUP.DEPBAR.LE gsb0, n leaves the newest n groups in flight (OVERLAP: n = 1)."""
    in_flight, group, hazards = [], set(), 0
    for walk in range(2):
        for text in body:
            m = re.match(r"HGMMA\S*\s+R\d+,\s*R(\d+)", text)
            if m:
                group |= set(range(int(m.group(1)), int(m.group(1)) + 4))
                if "gsb0" in text:
                    in_flight, group = in_flight + [group], set()
                continue
            m = re.search(r"WARPGROUP\.DEPBAR\.LE\s+gsb0,\s*0x(\d+)", text)
            if m:
                keep = int(m.group(1), 16)
                in_flight = in_flight[len(in_flight) - keep:] if keep else []
                continue
            if walk and any(_written(text) & g for g in in_flight):
                hazards += 1
    return hazards
