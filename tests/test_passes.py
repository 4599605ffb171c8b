"""Every registered pass is held to its declared contract on every named tiny model.

A pass that declares ``preserves_computation`` must leave the ANN's output unchanged (up to float
rounding) wherever it applies; it runs on the graph as normalization would hand it over, i.e. after
the passes before it in NORMALIZE_ORDER (a pass outside the order runs on the fully normalized graph).
"""
import pytest
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from snnconv.handlers import HANDLERS, HandlerTable
from snnconv.passes import NORMALIZE_ORDER, PASSES, register_pass
from snnconv.stages.convert import normalize

from models import INPUT_SHAPE, TINY_MODELS, build

PRESERVING = sorted(name for name, graph_pass in PASSES.items() if graph_pass.preserves_computation)
RELATIVE_TOLERANCE = 1e-5


class InPlaceStatements(nn.Module):
    """In-place ops used as statements: their effect is the mutation, their return value is discarded.

    fx turns ``out += identity`` into an out-of-place add, so the named tiny models never reach
    out_of_place; these forms do (and the in-place ReLU forms of relu_to_modules).
    """

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(64, 16), nn.Linear(64, 16)
        self.c, self.d = nn.Linear(16, 16), nn.Linear(16, 10)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        x = x.flatten(1)
        y = self.a(x)
        y.add_(self.b(x))
        torch.relu_(y)
        z = self.c(y)
        self.act(z)
        w = z * 2.0
        F.relu(w, inplace=True)
        w.relu_()
        return self.d(w - 0.5)


MODELS = TINY_MODELS + ("inplace",)


def _build(name: str) -> nn.Module:
    if name == "inplace":
        torch.manual_seed(0)
        return InPlaceStatements().eval()
    return build(name)


def _inputs() -> torch.Tensor:
    # signed inputs, so that ReLUs and max pools see both signs and a wrong reordering would show
    return torch.randn(32, *INPUT_SHAPE, generator=torch.Generator().manual_seed(3))


def _traced_before(pass_name: str, model_name: str) -> torch.fx.GraphModule:
    """The tiny model traced by fx, with the passes that run before ``pass_name`` already applied."""
    gm = torch.fx.symbolic_trace(_build(model_name)).eval()
    before = NORMALIZE_ORDER[:NORMALIZE_ORDER.index(pass_name)] if pass_name in NORMALIZE_ORDER else NORMALIZE_ORDER
    for name in before:
        PASSES[name](gm)
    return gm


def _relative_change(before: torch.Tensor, after: torch.Tensor) -> float:
    return float((after - before).abs().max() / before.abs().max())


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("pass_name", PRESERVING)
def test_preserving_pass_keeps_ann_output(pass_name, model_name):
    gm = _traced_before(pass_name, model_name)
    x = _inputs()
    with torch.no_grad():
        reference = gm(x).clone()
        PASSES[pass_name](gm)
        rewritten = gm(x)
    assert rewritten.shape == reference.shape
    change = _relative_change(reference, rewritten)
    assert change <= RELATIVE_TOLERANCE, f"{pass_name} on {model_name}: relative change {change:.3g}"


@pytest.mark.parametrize("pass_name", PRESERVING)
def test_preserving_pass_is_exercised_by_some_tiny_model(pass_name):
    """Otherwise the contract test above would pass without the pass ever doing anything."""
    changed = [name for name in MODELS if PASSES[pass_name](_traced_before(pass_name, name))]
    assert changed, f"no test model exercises pass '{pass_name}'; add one to tests/models.py"


def test_registry_holds_every_normalization_pass():
    assert len(set(NORMALIZE_ORDER)) == len(NORMALIZE_ORDER)
    for name in NORMALIZE_ORDER:
        assert name in PASSES, f"NORMALIZE_ORDER names unregistered pass '{name}'"
        assert PASSES[name].name == name
        assert PASSES[name].preserves_computation, f"normalization pass '{name}' must not change the ANN"


@pytest.mark.parametrize("model_name", ["vgg", "residual"])
def test_fold_batchnorm_removes_batchnorm_nodes(model_name):
    gm = _traced_before("fold_batchnorm", model_name)

    def batchnorm_nodes():
        return [n for n in gm.graph.nodes if n.op == "call_module"
                and isinstance(gm.get_submodule(n.target), (nn.BatchNorm1d, nn.BatchNorm2d))]

    found = len(batchnorm_nodes())
    assert found > 0
    records = PASSES["fold_batchnorm"](gm)
    assert batchnorm_nodes() == []
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in gm.modules())
    assert [r.status for r in records] == ["folded"] * found


def test_maxpool_to_avgpool_is_declared_non_preserving_and_changes_output():
    assert not PASSES["maxpool_to_avgpool"].preserves_computation
    gm = _traced_before("maxpool_to_avgpool", "maxpool")  # fully normalized: max pools are modules
    assert any(isinstance(m, nn.MaxPool2d) for m in gm.modules())
    x = _inputs()
    with torch.no_grad():
        reference = gm(x).clone()
        records = PASSES["maxpool_to_avgpool"](gm)
        rewritten = gm(x)
    assert len(records) == 2
    assert not any(isinstance(m, nn.MaxPool2d) for m in gm.modules())
    assert _relative_change(reference, rewritten) > 1e-2


def test_registering_a_pass_twice_raises():
    existing = PASSES["fold_batchnorm"]
    with pytest.raises(ValueError, match="fold_batchnorm"):
        register_pass("fold_batchnorm", preserves_computation=True, description="impostor")(lambda gm: [])
    assert PASSES["fold_batchnorm"] is existing


def test_registering_a_handler_twice_raises():
    table = HandlerTable()
    table.module(nn.ReLU, "neuron", ("inplace",))
    with pytest.raises(ValueError):
        table.module(nn.ReLU, "linear")
    table.function(torch.relu, "torch.relu", "neuron")
    with pytest.raises(ValueError):
        table.function(torch.relu, "torch.relu_again", "linear")
    table.method("relu", "neuron")
    with pytest.raises(ValueError):
        table.method("relu", "linear")
    # the shared table refuses too, and keeps its entry
    gm = torch.fx.symbolic_trace(nn.Sequential(nn.ReLU()))
    node = next(n for n in gm.graph.nodes if n.op == "call_module")
    before = HANDLERS.find(node, gm)
    with pytest.raises(ValueError):
        HANDLERS.module(nn.ReLU, "linear")
    assert HANDLERS.find(node, gm) is before and before.role == "neuron"


@pytest.mark.parametrize("model_name", MODELS)
def test_normalization_computes_the_source_module(model_name):
    """The whole normalization chain, on a copy: the result computes what the user's module computes,
    and the user's module is left as it was."""
    model = _build(model_name)
    x = _inputs()
    with torch.no_grad():
        before = model(x).clone()
        normalized, _ = normalize(torch.fx.symbolic_trace(model))
        assert _relative_change(before, normalized(x)) <= RELATIVE_TOLERANCE
        assert torch.equal(model(x), before)


def test_inplace_statements_keep_their_effect():
    """After normalization every ReLU of the in-place model is a module the network's output reads."""
    normalized, _ = normalize(torch.fx.symbolic_trace(_build("inplace")))
    relus = [n for n in normalized.graph.nodes if n.op == "call_module"
             and isinstance(normalized.get_submodule(n.target), nn.ReLU)]
    assert len(relus) == 4
    assert all(len(n.users) == 1 for n in relus)
    assert not any(n.op == "call_method" and n.target.endswith("_") for n in normalized.graph.nodes)
