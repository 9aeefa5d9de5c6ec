r"""The QLAB optimizers: thin ``torch.optim.Optimizer`` subclasses over flat buffers.

Each step (SPEC §1), with every scalar a 0-d device tensor and no host synchronisation after the
closure returns:

.. math::
    L_0 = L(\theta),\ G = \nabla L(\theta);\quad
    \text{probe pass: state},\ V,\ \theta_p = \theta - \beta X,\ \langle V,G\rangle, \dots;\quad
    L_\beta = L(\theta_p);\quad \alpha = \text{rule}(L_0, L_\beta, \dots);\quad
    \text{update pass: } \theta \leftarrow \theta - \alpha V
"""
from __future__ import annotations

import math
import warnings

import torch

from . import distributed, hygiene, rules, sharded
from .backends import NAMES as BACKEND_NAMES
from .backends import get as get_backend
from .contract import KIND_ADAM, KIND_MOMENTUM, KIND_SGD, SC_ALPHA, Hyper, scalars
from .flat import SUPPORTED, Segment
from .reference import FP32_EPS, RULES, probe_direction, resolve_rule

PROBES = ("inplace", "copy")
_BACKWARD_IN_CLOSURE = (
    "the closure seems to call backward(): QLAB closures return the loss and must not call "
    "backward() (QLAB runs backward itself after the first call, and calls the closure a second "
    "time under torch.no_grad() for the probe). Remove loss.backward() from the closure, or call it "
    "yourself outside and pass the loss: `loss.backward(); opt.step(closure, loss=loss)`.")


_HALF_LOSS = (
    "the closure returned a {dtype} loss: QLAB fits a parabola to loss differences Lβ − L0 that are "
    "finer than a {dtype} scalar resolves (8 significant bits in bfloat16, 11 in float16; with a "
    "bfloat16 loss neither the Adam default nor QLAB-Momentum trains the digits MLP and CNN, and "
    "rule='alternate_trust_ema_rel_near_match_guard_hold' measures nothing on about half its "
    "steps; docs/quality.md, log items 29, 30, 36). "
    "Compute the loss in float32, e.g. F.cross_entropy(logits.float(), y); the model itself may "
    "stay in {dtype}.")


def _check_loss(loss, where: str, need_grad: bool) -> torch.Tensor:
    if not isinstance(loss, torch.Tensor):
        raise TypeError(f"the closure must return the loss as a torch.Tensor ({where}), "
                        f"got {type(loss).__name__}")
    if loss.numel() != 1:
        raise ValueError(f"the closure must return a scalar loss ({where}), got shape "
                         f"{tuple(loss.shape)}")
    if need_grad and not loss.requires_grad:
        raise ValueError(f"the loss ({where}) does not require grad: the closure must compute it "
                         "from the parameters with autograd enabled")
    return loss


class QLABOptimizer(torch.optim.Optimizer):
    """Shared machinery; use :class:`QLABSGD`, :class:`QLABAdam` or :class:`QLABAdamW`."""

    _kind = KIND_SGD

    def __init__(self, params, defaults: dict, rule: str, probe: str, backend: str,
                 process_group=None):
        if rule != "auto" and rule not in RULES:
            raise ValueError(f"rule must be 'auto' or one of {RULES}, got {rule!r}")
        rule = resolve_rule(rule, self._kind)  # "auto": per direction family (docs/quality.md)
        if probe not in PROBES:
            raise ValueError(f"probe must be one of {PROBES}, got {probe!r}")
        if backend != "auto" and backend not in BACKEND_NAMES:
            raise ValueError(f"backend must be 'auto' or one of {BACKEND_NAMES}, got {backend!r}")
        self.rule, self.probe, self.backend_request = rule, probe, backend
        self.process_group = process_group  # None: average losses over the default group if any
        self._segments: list[Segment] = []
        self._forward_state = None  # recorded by zero_grad() / mark_forward() for loss= steps
        self._k = 0                 # step calls, host side (picks the probe direction)
        self._in_probe = False
        self._warned_half_loss = False
        self._shard_group = None    # FSDP2: the process group whose ranks hold the shards
        super().__init__(params, defaults)
        dev = self._segments[0].device if self._segments else torch.device("cpu")
        self._rs = rules.init_state(self._alpha0_ref(), dev)
        self.alpha = self._rs["alpha"]  # the last step's α, a device tensor

    # -- construction ---------------------------------------------------------------------------
    def _validate_group(self, group: dict) -> None:
        a0 = group["alpha0"]
        if not isinstance(a0, (int, float)) or not math.isfinite(a0) or a0 <= 0:
            raise ValueError(f"alpha0 must be a finite number > 0, got {a0!r}")
        if group["weight_decay"] < 0:
            raise ValueError(f"weight_decay must be >= 0, got {group['weight_decay']!r}")

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        self._validate_group(group)
        params = group["params"]
        devices = {p.device for p in params}
        if len(devices) > 1:
            raise ValueError("all parameters of one param group must be on one device, got "
                             f"{sorted(map(str, devices))}; put each device in its own group")
        gi = len(self.param_groups) - 1
        labels = {id(p): f"param_groups[{gi}]['params'][{i}]" for i, p in enumerate(params)}
        for p in params:
            where = f"{labels[id(p)]}, shape {tuple(p.shape)}"
            if p.is_complex():
                raise TypeError(f"QLAB does not support complex parameters ({where}); split them "
                                "into real and imaginary parts (torch.view_as_real)")
            if p.is_sparse:
                raise TypeError(f"QLAB does not support sparse parameters ({where})")
            if p.dtype not in SUPPORTED:
                raise TypeError(f"parameter dtype {p.dtype} is not supported ({where}); use one of "
                                f"{SUPPORTED} (float64: see qlab_fused.reference)")
        shards = [p for p in params if sharded.is_sharded(p)]
        if shards:
            self._check_shards(shards, params)
        by_dtype: dict = {}
        for p in params:
            if not sharded.is_sharded(p):
                by_dtype.setdefault(p.dtype, []).append(p)
        segs = [sharded.ShardSegment(p, self._hyper(group), labels[id(p)]) for p in shards]
        segs += [Segment(plist, self._hyper(group), inplace=self.probe == "inplace",
                         labels=[labels[id(p)] for p in plist]) for plist in by_dtype.values()]
        for seg in segs:
            plist = seg.params
            seg.group_index = gi
            seg.backend_name, seg.backend = get_backend(self.backend_request, seg.device)
            self._segments.append(seg)
            for name, views in seg.state_views().items():
                for p, v in zip(plist, views):
                    self.state[p][name] = v
        self._refresh_hypers()

    def _check_shards(self, shards, params) -> None:
        """FSDP2: every parameter sharded over one 1-D mesh; its group sums the reductions."""
        if len(shards) != len(params):
            raise ValueError("a param group mixes FSDP2-sharded (DTensor) and plain parameters; "
                             "shard the whole model with fully_shard")
        meshes = {id(p.device_mesh) for p in shards}
        mesh = shards[0].device_mesh
        if len(meshes) > 1 or mesh.ndim != 1:
            raise NotImplementedError("sharded parameters must share one 1-D device mesh "
                                      "(HSDP / 2-D meshes are not supported yet)")
        if self.probe != "inplace":
            raise NotImplementedError("sharded parameters support probe='inplace' only")
        self._shard_group = mesh.get_group()

    def _refresh_hypers(self) -> None:
        """Per-segment constants from the param groups (users may edit groups between steps)."""
        for seg in self._segments:
            seg.hyper = self._hyper(self.param_groups[seg.group_index])

    def _alpha0_ref(self) -> float:
        return max(g["alpha0"] for g in self.param_groups)

    def _hyper(self, group: dict) -> Hyper:  # overridden per optimizer
        raise NotImplementedError

    # -- user-facing helpers ------------------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zero the flat gradient buffers (``p.grad`` stays a view; ``set_to_none`` is ignored) and
        record the RNG/autocast state for the next ``step(closure, loss=loss)``.

        Inside the probe call of a closure it does nothing: the update pass still needs G.
        """
        if self._in_probe:
            return
        for seg in self._segments:
            seg.zero_grad()
        self.mark_forward()

    def mark_forward(self) -> None:
        """Record the RNG and autocast state the coming training forward runs under, so the probe
        replays its dropout masks. ``zero_grad()`` calls this; call it yourself if you don't."""
        self._forward_state = hygiene.capture()

    def sync_master(self) -> None:
        """probe="copy": reload the fp32 master from ``p.data`` after editing parameters directly."""
        for seg in self._segments:
            seg.sync_master()

    @property
    def backends_in_use(self) -> list[str]:
        return [seg.backend_name for seg in self._segments]

    # -- the step -----------------------------------------------------------------------------------
    def step(self, closure=None, loss=None):
        """One QLAB step. ``closure()`` returns the loss and does not call backward().

        ``step(closure)``: zeroes the gradients, runs the closure with grad and backward, then runs
        it once more under no_grad at the probe point. ``step(closure, loss=loss)``: you already
        ran backward on ``loss``; the closure is only called for the probe. Returns the loss L0.
        """
        if closure is None:
            raise ValueError("QLAB needs a closure that returns the loss: the probe evaluates it at "
                             "θ − βV. Use opt.step(closure) or opt.step(closure, loss=loss)")
        if loss is None:
            self.zero_grad()  # the step owns forward and backward; also records the RNG state
            before = self._forward_state
            with torch.enable_grad():
                L0 = _check_loss(closure(), "training forward", need_grad=True)
            try:
                L0.backward()
            except RuntimeError as exc:
                if "second time" in str(exc) or "does not require grad" in str(exc):
                    raise RuntimeError(_BACKWARD_IN_CLOSURE) from exc
                raise
        else:
            L0 = _check_loss(loss, "loss=", need_grad=False)
            before = self._forward_state
        return self._qlab_step(closure, L0.detach(), before)

    @torch.no_grad()
    def _qlab_step(self, closure, L0, before):
        dev = self._rs["step"].device
        loss_dtype = L0.dtype
        if loss_dtype in (torch.bfloat16, torch.float16) and not self._warned_half_loss:
            # stacklevel: past no_grad, step() and torch.optim's hook wrapper, to the caller's line
            warnings.warn(_HALF_LOSS.format(dtype=str(loss_dtype).replace("torch.", "")),
                          stacklevel=5)
            self._warned_half_loss = True
        # Keep a float64 loss in float64: the rule subtracts Lβ − L0 and needs every digit.
        L0 = L0.reshape(()).to(device=dev, dtype=torch.promote_types(L0.dtype, torch.float32))
        ok = torch.isfinite(L0)
        step = self._rs["step"] + ok.float()
        pdir = probe_direction(self.rule, self._kind, self._k)
        self._k += 1
        beta = self._rs["beta"]
        self._refresh_hypers()
        scs, red = [], None
        for seg in self._segments:
            seg.attach_grads()
            sc = scalars(step.to(seg.device), ok.to(seg.device), beta.to(seg.device), seg.hyper)
            r = seg.backend.probe_pass(seg.master, seg.work, seg.grad, seg.states, sc, seg.hyper,
                                       pdir)
            red = r.to(dev) if red is None else red + r.to(dev)  # fixed segment order
            scs.append(sc)
        if red is None:  # no parameters
            return L0
        self._in_probe = True
        try:
            with hygiene.probe_context(before) as probe:
                Lb = _check_loss(closure(), "probe forward", need_grad=False)
        except BaseException as exc:
            self._update(scs, pdir, torch.zeros((), device=dev))  # α = 0: put θ back
            if isinstance(exc, RuntimeError) and "does not require grad" in str(exc):
                raise RuntimeError(_BACKWARD_IN_CLOSURE) from exc
            raise
        finally:
            self._in_probe = False
        if self._shard_group is not None:  # FSDP2: average the losses, sum the reductions
            L0, Lb, red = distributed.all_reduce_step(L0, Lb, red, self._shard_group)
        elif (group := distributed.resolve(self.process_group)) is not None:
            L0, Lb = distributed.average_losses(L0, Lb, group)
        # What `*_guard` counts as rounding: the coarsest of the losses' dtypes and the parameters',
        # the parameters' at most fp32's: an fp32 model's loss carries fp32 rounding even when summed
        # in float64, but a bf16 model's loss computed in fp32 averages its rounding over the batch
        # (with bf16's threshold, 0.066·|L0|, round 8's Adam default zeroed 202–220 of 222 steps of
        # the digits MLP; with fp32's it trains: docs/quality.md, log item 29)
        loss_eps = max([torch.finfo(loss_dtype).eps, torch.finfo(Lb.dtype).eps]
                       + [min(torch.finfo(seg.dtype).eps, FP32_EPS) for seg in self._segments])
        # The probe floor counts the coarsest dtype the probe forward reads the parameters in: their
        # own (not the fp32 master), or autocast's (fp32 parameters read in bf16 round as bf16 ones)
        param_eps = max([torch.finfo(seg.dtype).eps for seg in self._segments]
                        + [torch.finfo(d).eps for d in probe.autocast_dtypes])
        alpha, rs = rules.rule_step(self.rule, L0, Lb.to(dev), red, self._rs, self._alpha0_ref(),
                                    pdir, loss_eps, param_eps)
        rs["step"] = step
        self._rs = rs
        self._update(scs, pdir, alpha)
        self.alpha = alpha
        self._last = {"L0": L0, "Lbeta": Lb.detach().float().reshape(()), "red": red,
                      "beta": beta, "probe_dir": pdir}
        return L0

    def _update(self, scs, pdir, alpha) -> None:
        for seg, sc in zip(self._segments, scs):
            sc[SC_ALPHA] = alpha.to(seg.device)
            seg.backend.update_pass(seg.master, seg.work, seg.grad, seg.states, sc, seg.hyper,
                                    pdir, seg.inplace)

    # -- persistence --------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        sd = super().state_dict()
        sd["qlab"] = {"rule_state": {k: v.clone() for k, v in self._rs.items()}, "k": self._k,
                      "rule": self.rule, "probe": self.probe}
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        """Copy a saved state into the flat buffers (views stay views; fp32 state stays fp32)."""
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        params = [p for g in self.param_groups for p in g["params"]]
        if sum(len(g["params"]) for g in saved_groups) != len(params):
            raise ValueError("loaded state dict has a different number of parameters")
        for group, saved in zip(self.param_groups, saved_groups):
            group.update({k: v for k, v in saved.items() if k != "params"})
        index = {i: p for g_saved, g in zip(saved_groups, self.param_groups)
                 for i, p in zip(g_saved["params"], g["params"])}
        for i, entries in state_dict["state"].items():
            p = index[int(i)]
            for name, value in entries.items():
                if name in self.state[p]:
                    self.state[p][name].copy_(value)
        self._refresh_hypers()
        for seg in self._segments:
            if not seg.inplace and seg.dtype == torch.float32:
                seg.master.copy_(seg.work)  # fp32 copy mode: master equals the parameters
        qlab = state_dict["qlab"]
        dev = self._rs["step"].device
        loaded = {k: v.detach().to(device=dev, dtype=torch.float32).clone()
                  for k, v in qlab["rule_state"].items()}
        # a checkpoint from before a rule-state slot existed (e.g. "ema") starts that slot empty
        self._rs = {**rules.init_state(self._alpha0_ref(), dev), **loaded}
        self._k = int(qlab["k"])
        self.alpha = self._rs["alpha"]


class QLABSGD(QLABOptimizer):
    r"""QLAB with SGD directions: plain (V = G + λθ), heavy-ball momentum, or Nesterov.

    Coefficients follow ``torch.optim.SGD``: ``buf = μ·buf + (1−δ)(G + λθ)`` (``buf = G + λθ`` on the
    first step), ``V = buf`` or ``(G + λθ) + μ·buf`` with ``nesterov=True``. The step θ ← θ − αV
    uses α fitted each step; ``alpha0`` only sets the first probe distance.
    """

    def __init__(self, params, alpha0: float = 0.1, momentum: float = 0.0, dampening: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0, *, rule: str = "auto",
                 probe: str = "inplace", backend: str = "auto", process_group=None):
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum > 0 and zero dampening")
        self._kind = KIND_MOMENTUM if momentum > 0 else KIND_SGD
        super().__init__(params, dict(alpha0=alpha0, momentum=momentum, dampening=dampening,
                                      nesterov=nesterov, weight_decay=weight_decay),
                         rule, probe, backend, process_group)

    def _hyper(self, group):
        kind = KIND_MOMENTUM if group["momentum"] > 0 else KIND_SGD
        return Hyper(kind, lr_scale=group["alpha0"] / self._alpha0_ref(),
                     weight_decay=group["weight_decay"], momentum=group["momentum"],
                     dampening=group["dampening"], nesterov=group["nesterov"])


class QLABAdam(QLABOptimizer):
    r"""QLAB with Adam directions: V = m̂/(√v̂ + ε), coupled L2 weight decay (G' = G + λθ).

    Coefficients follow ``torch.optim.Adam``. The step θ ← θ − αV uses α fitted each step.
    """

    _kind = KIND_ADAM
    _decoupled = False

    def __init__(self, params, alpha0: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, *, rule: str = "auto", probe: str = "inplace",
                 backend: str = "auto", process_group=None):
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"betas must be in [0, 1), got {betas!r}")
        if not eps >= 0.0:
            raise ValueError(f"eps must be >= 0, got {eps!r}")
        super().__init__(params, dict(alpha0=alpha0, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay), rule, probe, backend,
                         process_group)

    def _hyper(self, group):
        b1, b2 = group["betas"]
        return Hyper(KIND_ADAM, lr_scale=group["alpha0"] / self._alpha0_ref(),
                     weight_decay=group["weight_decay"], beta1=b1, beta2=b2, eps=group["eps"],
                     decoupled=self._decoupled)


class QLABAdamW(QLABAdam):
    r"""QLAB with AdamW directions: V = m̂/(√v̂ + ε) + λθ (decoupled weight decay, scaled by α)."""

    _decoupled = True

    def __init__(self, params, alpha0: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, **kw):
        super().__init__(params, alpha0, betas, eps, weight_decay, **kw)
