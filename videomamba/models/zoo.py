"""The official checkpoint files (MODEL_ZOO) and the model kwargs each one needs.

A pretrained tag is ``<variant>.<tag>``, e.g. ``videomamba_tiny.k400_f8_res224``. The file name is the
official one, so a folder of downloaded official checkpoints works as-is (see ``VIDEOMAMBA_HOME``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

HF_HUB_ID = "OpenGVLab/VideoMamba"

_SIZE_LETTER = {"videomamba_tiny": "t", "videomamba_small": "s", "videomamba_middle": "m", "videomamba_base": "b"}


@dataclass(frozen=True)
class ZooEntry:
    variant: str
    tag: str
    file: str
    num_classes: int
    img_size: int
    num_frames: int | None = None
    note: str = ""
    model_kwargs: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.variant}.{self.tag}"

    def kwargs(self) -> dict:
        kw = {"num_classes": self.num_classes, "img_size": self.img_size, **self.model_kwargs}
        if self.num_frames is not None:
            kw["num_frames"] = self.num_frames
        return kw


def _build_zoo() -> dict[str, ZooEntry]:
    entries: list[ZooEntry] = []
    # Image classification on ImageNet-1K (image_sm MODEL_ZOO).
    for variant, res in (("videomamba_tiny", (224, 448, 576)), ("videomamba_small", (224, 448, 576)),
                         ("videomamba_middle", (224, 448, 576)), ("videomamba_base", (224,))):
        s = _SIZE_LETTER[variant]
        chain = ""
        for r in res:
            chain = "res224" if r == 224 else f"{chain}to{r}"
            note = "self-distilled (teacher S)" if (r == 224 and s in "mb") else ""
            entries.append(ZooEntry(variant, f"in1k_{chain}", f"videomamba_{s}16_in1k_{chain}.pth", 1000, r, None, note))
    # Kinetics-400 fine-tuned from IN-1K (video_sm MODEL_ZOO).
    for variant in ("videomamba_tiny", "videomamba_small", "videomamba_middle"):
        s = _SIZE_LETTER[variant]
        for t in (8, 16, 32, 64):
            entries.append(ZooEntry(variant, f"k400_f{t}_res224", f"videomamba_{s}16_k400_f{t}_res224.pth", 400, 224, t))
        entries.append(ZooEntry(variant, "k400_f64_res224to384", f"videomamba_{s}16_k400_f64_res224to384.pth", 400, 384, 64))
        for t in (8, 16):
            entries.append(ZooEntry(variant, f"ssv2_f{t}_res224", f"videomamba_{s}16_ssv2_f{t}_res224.pth", 174, 224, t))
        entries.append(ZooEntry(variant, "ssv2_f16_res224to288", f"videomamba_{s}16_ssv2_f16_res224to288.pth", 174, 288, 16))
    # VideoMamba-M after masked pretraining (MASK rows).
    m = "videomamba_middle"
    for ds in ("k400", "ssv2"):
        entries.append(ZooEntry(m, f"{ds}_mask_pt_f8_res224", f"videomamba_m16_{ds}_mask_pt_f8_res224.pth", 0, 224, 8,
                                "masked-pretraining student (no head; final norm saved as `norm`)"))
    for t in (8, 16, 32, 64):
        entries.append(ZooEntry(m, f"k400_mask_ft_f{t}_res224", f"videomamba_m16_k400_mask_ft_f{t}_res224.pth", 400, 224, t))
    entries.append(ZooEntry(m, "k400_mask_ft_f64_res224to384", "videomamba_m16_k400_mask_ft_f64_res224to384.pth", 400, 384, 64))
    for t in (8, 16):
        entries.append(ZooEntry(m, f"ssv2_mask_ft_f{t}_res224", f"videomamba_m16_ssv2_mask_ft_f{t}_res224.pth", 174, 224, t))
    entries.append(ZooEntry(m, "ssv2_mask_ft_f16_res224to288", "videomamba_m16_ssv2_mask_ft_f16_res224to288.pth", 174, 288, 16))
    # Video-text (UMT) checkpoints: the vision encoder is stored under `vision_encoder.`.
    for corpus in ("5M", "17M", "25M"):
        entries.append(ZooEntry(m, f"umt_{corpus.lower()}_f8_res224", f"videomamba_m16_{corpus}_f8_res224.pth", 0, 224, 8,
                                "video-text model; only the vision encoder loads into VisionMamba"))
    return {e.name: e for e in entries}


ZOO: dict[str, ZooEntry] = _build_zoo()


def zoo_entries(variant: str | None = None) -> list[ZooEntry]:
    return [e for e in ZOO.values() if variant is None or e.variant == variant]
