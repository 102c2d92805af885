"""The masked-pretraining validation numbers (videomamba/objectives/alignment.py ``evaluate_alignment``, whose
``cos`` the run logs as ``val_cos``, and the training step's ``align_cos``) against the mean cosine computed
here from the features themselves: the student's output and the teacher's features at the visible positions,
recorded on their way through a tiny student and teacher, compared with ``torch.cosine_similarity`` one
token at a time. The loss weight is 2, so a cosine taken from the loss without undoing the weight shows."""
import pytest
import torch
import torch.nn.functional as F

from videomamba.models.clip_teacher import CLIPTeacher, build_clip_vit
from videomamba.models.masked_student import VideoMambaPretrain
from videomamba.objectives.alignment import MaskedAlignmentLoss, evaluate_alignment

RATIO = 2.0
CPU = torch.device("cpu")


class SpyTeacher:
    """The teacher, recording the features it returns."""

    def __init__(self, teacher):
        self.teacher, self.features = teacher, []

    def __call__(self, x, **kw):
        out = self.teacher(x, **kw)
        self.features.append(out.features.detach().clone())
        return out


class SpyStudent(torch.nn.Module):
    """The student (as ``.module``, where the step looks for its patch grid), recording each mask it is given
    and what it returns."""

    def __init__(self, student):
        super().__init__()
        self.module = student
        self.calls = []

    def forward(self, x, mask):
        out = self.module(x, mask)
        self.calls.append((mask.detach().clone(), out.detach().clone()))
        return out


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    teacher = CLIPTeacher(build_clip_vit(img_size=32, patch_size=8, width=32, layers=2, heads=2), torch.randn(32, 12))
    student = VideoMambaPretrain(img_size=32, patch_size=8, embed_dim=32, depth=3, num_frames=4, clip_output_dim=12,
                                 clip_return_layers=2)
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(3, 3, 4, 32, 32, generator=g), torch.zeros(3)),
               (torch.randn(1, 3, 4, 32, 32, generator=g), torch.zeros(1))]   # uneven: per-clip weighting shows
    return teacher, student, batches


def cosines_by_hand(spy_teacher, spy_student):
    """Every (layer, clip, visible token) cosine of the recorded calls."""
    out = []
    assert len(spy_teacher.features) == len(spy_student.calls)
    for feats, (mask, pred) in zip(spy_teacher.features, spy_student.calls):
        K, B = feats.shape[:2]
        assert pred.shape[:2] == (K, B)
        for b in range(B):
            visible = ~mask[b]
            target = feats[:, b][:, visible]                      # (K, V, C) the teacher at the visible places
            assert pred.shape[2] == int(visible.sum()) and bool(visible[0])   # the CLS token is always visible
            out.append(F.cosine_similarity(pred[:, b].double(), target.double(), dim=-1).flatten())
    return torch.cat(out)


def test_val_cos_is_the_mean_cosine_of_the_features(parts):
    teacher, student, batches = parts
    spy_t, spy_s = SpyTeacher(teacher), SpyStudent(student)
    step = MaskedAlignmentLoss(spy_t, "random", 0.5, return_layers=2, teacher_interval=1, loss_ratio=RATIO)
    res = evaluate_alignment(spy_s, batches, CPU, progress=False, step=step, seed=0)
    cos = cosines_by_hand(spy_t, spy_s)
    assert cos.numel() == 2 * 4 * (1 + 4 * 8)   # 2 layers x 4 clips x (CLS + half of 4 x 16 patches)
    assert res["n"] == 4
    assert res["cos"] == pytest.approx(cos.mean().item(), abs=1e-5)
    # the loss is the weighted mean of 2 - 2 cos over the same tokens
    assert res["loss"] == pytest.approx(RATIO * (2 - 2 * cos.mean().item()), abs=1e-4)
    assert res["cos"] != pytest.approx(1 - res["loss"] / 2, abs=1e-3)   # the weight 2 matters here


def test_validation_masks_are_the_same_every_epoch(parts):
    teacher, student, batches = parts
    step = MaskedAlignmentLoss(teacher, "random", 0.5, return_layers=2, loss_ratio=RATIO)
    a = evaluate_alignment(student, batches, CPU, progress=False, step=step, seed=0)
    torch.manual_seed(123)   # whatever the global generator did in between
    b = evaluate_alignment(student, batches, CPU, progress=False, step=step, seed=0)
    c = evaluate_alignment(student, batches, CPU, progress=False, step=step, seed=1)
    assert a == b and c["cos"] != a["cos"]


def test_training_step_reports_the_mean_cosine_of_the_features(parts):
    teacher, student, batches = parts
    spy_t, spy_s = SpyTeacher(teacher), SpyStudent(student)
    step = MaskedAlignmentLoss(spy_t, "random", 0.5, return_layers=2, loss_ratio=RATIO)
    with torch.no_grad():
        loss, logged = step(spy_s, batches[0][0], generator=torch.Generator().manual_seed(5))
    cos = cosines_by_hand(spy_t, spy_s)
    assert float(logged["align_cos"]) == pytest.approx(cos.mean().item(), abs=1e-5)
    assert loss.item() == pytest.approx(RATIO * (2 - 2 * cos.mean().item()), abs=1e-4)
