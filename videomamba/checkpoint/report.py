"""What a checkpoint load did, in a form people can read."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LoadReport:
    source: str = "state_dict"
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    resized: dict[str, str] = field(default_factory=dict)     # key -> "old -> new (how)"
    renamed: dict[str, str] = field(default_factory=dict)     # old key -> new key
    dropped: dict[str, str] = field(default_factory=dict)     # key -> why it was not loaded
    skipped: list[str] = field(default_factory=list)          # training-only heads the model lacks
    prefixes_stripped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """True when every model tensor came from the checkpoint and nothing was left over."""
        return not (self.missing or self.unexpected or self.dropped)

    def __str__(self) -> str:
        n_model = len(self.loaded) + len(self.missing) + len(self.dropped)
        lines = [f"loaded {len(self.loaded)}/{n_model} model tensors from {self.source}"]
        if self.prefixes_stripped:
            lines.append("  prefixes stripped: " + ", ".join(repr(p) for p in self.prefixes_stripped))
        for title, items in (("renamed", [f"{a} -> {b}" for a, b in self.renamed.items()]),
                             ("resized", [f"{k}: {v}" for k, v in self.resized.items()]),
                             ("dropped (model keeps its init)", [f"{k}: {v}" for k, v in self.dropped.items()]),
                             ("missing (model keeps its init)", self.missing),
                             ("unexpected (ignored)", _summarise(self.unexpected)),
                             ("skipped (training-only heads)", _summarise(self.skipped)),
                             ("notes", self.notes)):
            if items:
                lines.append(f"  {title}:")
                lines.extend(f"    {s}" for s in items)
        return "\n".join(lines)


def _summarise(keys: list[str], limit: int = 12) -> list[str]:
    """Group keys by their first component so that e.g. 300 text-encoder keys take one line."""
    groups: dict[str, int] = {}
    for k in keys:
        groups[k.split(".")[0]] = groups.get(k.split(".")[0], 0) + 1
    out = [k for k in keys if groups[k.split(".")[0]] == 1]
    out += [f"{g}.* ({n} tensors)" for g, n in groups.items() if n > 1]
    return out[:limit] + ([f"... and {len(out) - limit} more"] if len(out) > limit else [])
