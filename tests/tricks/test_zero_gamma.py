"""Zero-γ: at initialisation every residual block outputs exactly its shortcut (its branch contributes 0)."""
from __future__ import annotations

from collections.abc import Callable

import pytest
import timm
import torch
from timm.models.resnet import BasicBlock as TimmBasic
from timm.models.resnet import Bottleneck as TimmBottleneck
from torch import Tensor, nn

from trickbox import ConfigError, load_tricks
from trickbox.build import create_model
from trickbox.models.blocks import BasicBlock, PreActBlock


def shortcut_of(block: nn.Module) -> Callable[[Tensor], Tensor]:
    """What each kind of block outputs when its residual branch is 0: its shortcut (then the final ReLU)."""
    relu = torch.relu
    if isinstance(block, (TimmBasic, TimmBottleneck)):
        return lambda x: relu(x if block.downsample is None else block.downsample(x))
    if isinstance(block, BasicBlock):
        return lambda x: relu(block.shortcut(x))
    if isinstance(block, PreActBlock):
        return lambda x: x if block.downsample is None else block.downsample(relu(block.bn1(x)))
    raise TypeError(type(block))


BLOCKS = (TimmBasic, TimmBottleneck, BasicBlock, PreActBlock)


def branch_outputs(model: nn.Module, x: Tensor) -> list[tuple[Tensor, Tensor]]:
    """(block output, shortcut of its input) for every residual block, in eval mode."""
    seen: list[tuple[Tensor, Tensor]] = []
    hooks = [m.register_forward_hook(lambda m, args, out: seen.append((out.clone(), shortcut_of(m)(args[0].clone()))))
             for m in model.modules() if isinstance(m, BLOCKS)]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return seen


def with_trick(model: nn.Module) -> nn.Module:
    tricks = load_tricks({"zero_gamma": {}}, autoload=False)
    tricks.setup(model, torch.optim.SGD(model.parameters(), lr=0.1), num_classes=10, epochs=1, steps_per_epoch=1)
    return model


@pytest.mark.parametrize("name", ["resnet18", "resnet50d", "test_resnet", "cifar_resnet8", "preact_resnet18"])
def test_every_block_starts_as_its_shortcut(name):
    torch.manual_seed(0)
    kwargs = {} if name.startswith(("cifar", "preact")) else {"zero_init_last": False}  # timm zero-inits by default
    model = create_model(name, num_classes=10, in_chans=3, **kwargs)
    x = torch.randn(2, 3, 32, 32)
    before = branch_outputs(model, x)
    assert len(before) >= 3
    assert all(not torch.allclose(out, short) for out, short in before)  # the branches contribute before the trick
    after = branch_outputs(with_trick(model), x)
    assert len(after) == len(before)
    for out, short in after:
        assert torch.equal(out, short)


def test_a_model_without_residual_blocks_gets_one_line():
    model = timm.create_model("test_vit", num_classes=10)
    with pytest.raises(ConfigError, match=r"^tricks\.zero_gamma: model 'test_vit' has no residual blocks with "
                                          r"zero_init_last\(\)") as info:
        with_trick(model)
    assert "\n" not in str(info.value)
