"""Option parsing shared by the commands: turns strings into the library's typed configs."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from snnconv.config import BalanceConfig, ConvertConfig, check_timing
from snnconv.data import DataConfig
from snnconv.errors import ConfigError


def check_counts(counts: dict[str, int | None]) -> None:
    """Counts of samples, rows or steps are at least 1 (None: not given); checked before any work starts, so the
    message names the option the user typed (the library's own checks name its fields)."""
    for option, value in counts.items():
        if value is not None and value < 1:
            raise ConfigError(f"{option} must be at least 1, got {value}.")


def parse_floats(text: str | None, option: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"{option} takes comma-separated numbers, got '{text}'.") from None


def parse_size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    parts = text.lower().replace("x", ",").split(",")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"--size takes HxW (e.g. 32x32), got '{text}'.") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) <= 0:
        raise ConfigError(f"--size takes HxW with positive sides, got '{text}'.")
    return values


def parse_ints(text: str | None, option: str) -> tuple[int, ...]:
    """'32,16,8' -> (32, 16, 8); empty when not given."""
    if not text:
        return ()
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"{option} takes comma-separated integers, got '{text}'.") from None


def parse_time_steps(values: list[str] | None, default: list[int] | None) -> list[int] | None:
    """-T 32, -T 8,16,32 or -T 8 -T 16."""
    if not values:
        return default
    steps = []
    for value in values:
        for part in str(value).split(","):
            try:
                steps.append(int(part))
            except ValueError:
                raise ConfigError(f"-T takes integers, got '{part}'.") from None
    for t in steps:
        if t <= 0:
            raise ConfigError(f"-T must be positive, got {t}.")
    return steps


def data_config(spec: str | None, split: str, limit: int | None, seed: int, mean: str | None, std: str | None,
                size: str | None) -> DataConfig | None:
    if spec is None:
        return None
    return DataConfig(spec, split=split, limit=limit, seed=seed, mean=parse_floats(mean, "--mean"),
                      std=parse_floats(std, "--std"), size=parse_size(size))


def convert_config(balance: str, granularity: str, percentile: float, half_init: bool, calibrate: str,
                   maxpool: str, calibration_samples: int, signed_spikes: bool = False,
                   balance_steps: int | None = None) -> ConvertConfig:
    return ConvertConfig(balance=BalanceConfig(method=balance, granularity=granularity, percentile=percentile,
                                               time_steps=balance_steps),
                         half_init=half_init, signed_spikes=signed_spikes, calibrate=calibrate, maxpool=maxpool,
                         calibration_samples=calibration_samples)


def model_argument(model: str | None) -> str | None:
    if model is None:
        return None
    return str(Path(model)) if Path(model).exists() else model


def parse_temperature(text: str) -> float | None:
    """'8' -> 8.0; 'auto' -> None (calibrated on the held-out split)."""
    if text.strip().lower() == "auto":
        return None
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"--temperature takes a positive number or 'auto', got '{text}'.") from None


def check_timing_option(timing: str | None) -> None:
    """--timing, when given, names one of snnconv.config.SPIKE_TIMINGS."""
    if timing is not None:
        check_timing(timing)


def _given(value, default):
    """The option's value when given (even 0, which the config then rejects), else the method's default."""
    return default if value is None else value


# The snnconv compress options each method reads (parameter name -> methods). An option given to a method that
# does not read it is refused, never silently ignored; options missing here (data, output, run) apply to all.
COMPRESS_OPTION_METHODS = {
    **dict.fromkeys(["accuracy_budget", "holdout", "holdout_data", "holdout_samples"], ("teas", "seenn")),
    **dict.fromkeys(["avg_t_budget", "candidates", "min_t", "noise", "timing", "retune_thresholds",
                     "calibrated_trials", "activity_weight"], ("teas",)),
    **dict.fromkeys(["budget_confidence", "score", "temperature", "alpha", "exit_chunk", "policy", "beta",
                     "policy_width"], ("seenn",)),
    **dict.fromkeys(["window", "fire_start", "tc", "percentile", "fit_epochs", "relaxation", "kernel_reg",
                     "bn_loss"], ("ttfs",)),
    **dict.fromkeys(["mask_weight", "groups", "mask_lr", "initial_steps"], ("dts",)),
    "finetune": ("teas", "seenn", "ttfs"),
    "finetune_loss": ("teas", "seenn"),
}
# SEENN options of one variant only: SEENN-I chooses alpha on the held-out split, SEENN-II (--policy) trains a policy.
SEENN_I_OPTIONS = ("accuracy_budget", "budget_confidence", "score", "temperature", "alpha")
SEENN_II_OPTIONS = ("beta", "policy_width")
# Options that shape the --finetune training, and options of any training the method runs.
FINETUNE_OPTIONS = ("activity_weight", "finetune_loss", "relaxation", "kernel_reg", "bn_loss")
TRAINING_OPTIONS = ("epochs", "lr", "checkpoint", "resume")


def refuse_foreign_options(method: str, given: dict[str, str], *, finetune: bool, policy: bool) -> None:
    """Refuse the options in ``given`` (parameter name -> the flag as typed) that --method ``method`` would not
    read, so that no option is silently ignored. An unknown method is left to the library."""
    if method not in ("teas", "seenn", "ttfs", "dts"):
        return
    for name, flag in given.items():
        methods = COMPRESS_OPTION_METHODS.get(name, (method,))
        if method not in methods:
            names = " and ".join(filter(None, [", ".join(methods[:-1]), methods[-1]]))
            raise ConfigError(f"{flag} applies to --method {names}, not to --method {method}.")
        if method == "seenn" and policy and name in SEENN_I_OPTIONS:
            raise ConfigError(f"{flag} applies to SEENN-I, which --policy (SEENN-II) replaces; drop one of the two.")
        if method == "seenn" and not policy and name in SEENN_II_OPTIONS:
            raise ConfigError(f"{flag} applies to SEENN-II; add --policy or drop {flag}.")
        if method == "teas" and name == "avg_t_budget" and "accuracy_budget" in given:
            raise ConfigError("--avg-t-budget cuts without checking the accuracy, so --accuracy-budget would be "
                              "ignored; drop one of the two.")
        if name in FINETUNE_OPTIONS and not finetune:
            raise ConfigError(f"{flag} shapes the --finetune training; add --finetune or drop {flag}.")
        trains = method == "dts" or finetune or (method == "seenn" and policy)
        if name in TRAINING_OPTIONS and not trains:
            runs = "--finetune or --policy" if method == "seenn" else "--finetune"
            raise ConfigError(f"{flag} sets training, which --method {method} runs only with {runs}; add "
                              f"{runs.replace(' or ', ' / ')} or drop {flag}.")


def compress_config(method: str, *, accuracy_budget: float | None, holdout: float | None, seed: int, avg_t_budget,
                    candidates, min_t, noise, score, temperature, alpha, exit_chunk, policy, beta, policy_width,
                    epochs, lr, finetune, activity_weight, finetune_loss=None, window=32, fire_start=None, tc=8.0,
                    percentile=99.9, fit_epochs=2, relaxation=True, kernel_reg=1e-5, bn_loss=1e-5, mask_weight=None,
                    groups=None, mask_lr=None, initial_steps=None, timing=None, retune_thresholds=None,
                    calibrated_trials=None, budget_confidence=None):
    """The TeasConfig, DtsConfig, SeennConfig or TTFSConfig of ``snnconv compress --method METHOD``; an unknown
    method is left to the library."""
    from snnconv.stages.dts import DtsConfig
    from snnconv.stages.finetune import FinetuneConfig
    from snnconv.stages.seenn import SeennConfig
    from snnconv.stages.teas import TeasConfig
    from snnconv.training import TrainConfig
    holdout = _given(holdout, 0.5)

    def tuning(default_loss: str, activity: float = 0.0) -> FinetuneConfig:  # TEAS and SEENN-I --finetune
        return FinetuneConfig(train=TrainConfig(epochs=_given(epochs, 1), batch_size=32, lr=_given(lr, 1e-4),
                                                optimizer="adam", weight_decay=0.0, seed=seed),
                              activity_weight=activity, loss=_given(finetune_loss, default_loss))

    if method == "teas":
        return TeasConfig(accuracy_budget=0.1 if accuracy_budget is None else accuracy_budget,
                          avg_steps_budget=avg_t_budget, candidates=parse_ints(candidates, "--candidates"),
                          min_steps=min_t, holdout_fraction=holdout, noise=noise, seed=seed, finetune=finetune,
                          tuning=tuning("ce", activity_weight), timing=_given(timing, "linear"),
                          retune_thresholds=_given(retune_thresholds, True),
                          calibrated_trials=_given(calibrated_trials, True))
    if method == "dts":
        defaults = DtsConfig()
        train = replace(defaults.train, epochs=defaults.train.epochs if epochs is None else epochs,
                        lr=defaults.train.lr if lr is None else lr, seed=seed)
        return DtsConfig(mask_weight=defaults.mask_weight if mask_weight is None else mask_weight,
                         groups=tuple(groups) if groups else defaults.groups,
                         mask_lr=defaults.mask_lr if mask_lr is None else mask_lr, initial_steps=initial_steps,
                         train=train)
    if method == "seenn":  # --epochs and --lr train the fine-tuning with --finetune, else the SEENN-II policy
        policy_train = TrainConfig(epochs=30 if finetune else _given(epochs, 30),
                                   lr=0.01 if finetune else _given(lr, 0.01), seed=seed)
        return SeennConfig(policy=policy, score=score, temperature=parse_temperature(temperature), alpha=alpha,
                           accuracy_budget=0.5 if accuracy_budget is None else accuracy_budget,
                           budget_confidence=budget_confidence, chunk_steps=exit_chunk,
                           holdout_fraction=holdout, beta=beta, policy_width=policy_width, train=policy_train,
                           seed=seed, finetune=finetune, tuning=tuning("ce-every-step"))
    if method == "ttfs":
        from snnconv.stages.ttfs import TTFSConfig, TTFSFinetuneConfig
        tuning = TTFSFinetuneConfig(train=TrainConfig(epochs=_given(epochs, 3), batch_size=64, lr=_given(lr, 1e-3),
                                                      optimizer="adam", weight_decay=1e-4, seed=seed),
                                    relaxation=relaxation, kernel_regularization=kernel_reg, bn_loss=bn_loss)
        return TTFSConfig(window=window, fire_start=fire_start, tc=tc, percentile=percentile, fit_epochs=fit_epochs,
                          finetune=finetune, tuning=tuning)
    return None


def direct_config(*, depth: int, dim: int, heads: int, mlp_ratio: int, time_steps: int, tet: bool, masks: bool,
                  mask_weight: float, groups: list[str] | None, epochs: int, lr: float, batch_size: int):
    """(SpikformerConfig, DirectConfig) of ``snnconv train``; the data fills in channels, image size and classes."""
    from snnconv.spikformer import SpikformerConfig
    from snnconv.stages.direct import DirectConfig
    from snnconv.training import TrainConfig
    architecture = SpikformerConfig(depth=depth, dim=dim, heads=heads, mlp_ratio=mlp_ratio)
    defaults = DirectConfig()
    config = DirectConfig(time_steps=time_steps, tet=tet, masks=masks, mask_weight=mask_weight,
                          groups=tuple(groups) if groups else defaults.groups,
                          train=TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, optimizer="adam",
                                            momentum=0.0, weight_decay=0.0))
    return architecture, config
